// poly-gelu, docs/arithmetic.md section K3.1 (constants K3.1.2, steps K3.1.3):
//
//   P1  w    = (|q| << GL) >> GR            |u| on the grid Sw (floor)
//   P2  d    = B - min(w, B)                d*Sw ~ v = max(0, |b| - |u|)
//   P3  d2s  = (d*d) >> S2                  (floor)
//   P4  y    = (d2s*d2s*mA) >> kA           y ~ |a| v^4 2^F (floor)
//   P5  E    = TWO_ONE - y if q > 0, else y E = 2^F (1 + L(u))
//   P6  out  = q * E                        no saturation: K3.1.3 proves |out| <= M < 2^31
//
// Purely combinational, elementwise. Every constant comes from the plan on a port. Widths are the
// spec's bounds: w < 2^62 (plan check), d <= B <= 2^14, d2s^2 * mA < 2^62, |out| < 2^31.
// y depends on the plan: y <= y_max, whose width the golden manifest declares per op
// (datapath.y, K3.1.2 "Registers"). Y_W = 30 holds every plan the spec accepts (|lo| >= 2 and
// |lo| y_max < 2^31 give y_max < 2^30); a narrower Y_W serves only plans that declare y <= Y_W.

module intsim_poly_gelu #(
    parameter int IN_W = 16,       // K3.0: signed inputs of 2..16 bits (narrower ones sign-extended)
    parameter int Y_W = 30         // the y register: >= the plan's datapath.y
) (
    input  logic signed [IN_W-1:0] q,
    input  logic        [5:0]      GL,        // input pre-shift left
    input  logic        [5:0]      GR,        // input pre-shift right
    input  logic        [14:0]     B,         // |b| on the grid, in [2^13, 2^14]
    input  logic        [2:0]      S2,        // 4
    input  logic        [13:0]     mA,        // A2 multiplier of |a| Sw^4 2^(2 S2 + F), 14 bits
    input  logic        [6:0]      kA,        // its shift, 0..62
    input  logic        [16:0]     TWO_ONE,   // 2^(F+1) = 65536
    output logic signed [31:0]     out        // at scale S 2^-(F+1)
);
    logic [IN_W-1:0] mag;      // |q|
    logic [62:0]     w;
    logic [14:0]     d;
    logic [28:0]     d2;       // d*d <= 2^28
    logic [24:0]     d2s;      // <= 2^24 for S2 = 4
    logic [63:0]     d4ma;     // d2s*d2s*mA < 2^62
    localparam int E_W = (Y_W > 17 ? Y_W : 17) + 1;     // 2^(F+1) - y and y, signed
    logic [Y_W-1:0]  y;        // <= y_max
    logic signed [E_W-1:0] E;

    always_comb begin
        mag = q[IN_W-1] ? IN_W'(-q) : IN_W'(q);                  // |-2^(IN_W-1)| fits unsigned
        w = (63'(mag) << GL) >> GR;                                            // P1
        d = B - ((w < 63'(B)) ? w[14:0] : B);                                  // P2
        d2 = 29'(d) * 29'(d);
        d2s = 25'(d2 >> S2);                                                   // P3
        d4ma = 64'(d2s) * 64'(d2s) * 64'(mA);
        y = Y_W'(d4ma >> kA);                                                  // P4
        E = (q > 0) ? E_W'(TWO_ONE) - E_W'(y) : E_W'(y);                       // P5
        out = 32'(q) * 32'(E);                                                 // P6
    end
endmodule
