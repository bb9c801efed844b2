// Requantizer of docs/arithmetic.md section A6:
//
//     y = sat_F(round_shift(x * m, k))
//
// A2: m is the dyadic multiplier (1 <= m < 2^31, unsigned), k the shift (-31 <= k <= 62).
// A3: round_shift(p, k) = asr(p + 2^(k-1), k) for k >= 1   (round half up: ties toward +infinity)
//                       = p                    for k = 0
//                       = p * 2^-k (exact)     for k < 0   (left shift by -k)
// A1: F is signed (two's complement) or unsigned, out_bits wide; sat_F clamps to its range.
//
// Purely combinational; one instance per lane. The datapath is wide enough to be exact for every
// x of IN_W bits and every (m, k) of A2 (the A4 int64 bound is a property of the software model:
// here nothing can wrap), so the result equals the spec wherever the spec defines it.
//
// ROUND_HALF_EVEN = 1 builds a deliberately WRONG variant (ties to even, as ONNX/NumPy round) that
// the testbench must reject: it differs from the spec only on exact ties (A6.tie_pos / A6.tie_neg).

module intsim_requant #(
    parameter int IN_W  = 32,               // width of the signed input x (accumulator: 32)
    parameter int OUT_W = 32,               // widest output format; out_bits selects 1..OUT_W
    parameter bit ROUND_HALF_EVEN = 1'b0    // 1: WRONG variant for testbench self-checks
) (
    input  logic signed [IN_W-1:0]  x,
    input  logic        [30:0]      m,          // A2 multiplier
    input  logic signed [6:0]       k,          // A2 shift in [-31, 62]
    input  logic        [5:0]       out_bits,   // A1 width of F: 2..OUT_W signed, 1..OUT_W unsigned
    input  logic                    out_signed, // A1 signedness of F
    output logic signed [OUT_W-1:0] y           // the value of F, sign-extended to OUT_W bits
);
    // x * m needs IN_W + 31 bits (m is unsigned), the exact left shift by up to 31 another 31,
    // and one guard bit keeps the saturation compare free of overflow.
    localparam int W = IN_W + 31 + 31 + 1;

    logic signed [W-1:0] p;          // x * m, exact
    logic signed [W-1:0] half;       // 2^(k-1), the A3 rounding constant
    logic signed [W-1:0] q;          // round_shift(x * m, k)
    logic signed [W-1:0] lo, hi;     // range of F (A1)
    logic        [5:0]   rshift;     // k when k >= 1
    logic        [4:0]   lshift;     // -k when k < 0
    logic                is_tie;

    always_comb begin
        p = W'(x) * W'($signed({1'b0, m}));     // m is unsigned: a 0 sign bit
        rshift = k[5:0];
        lshift = 5'(-k);
        half = '0;
        is_tie = 1'b0;
        if (k > 0) begin
            half = W'(1) <<< (rshift - 6'd1);
            q = (p + half) >>> rshift;                       // A3: one add, one arithmetic shift
            // the bits shifted out are exactly one half: a tie (only the wrong variant looks)
            is_tie = ((p & ((half <<< 1) - W'(1))) == half);
            if (ROUND_HALF_EVEN && is_tie && q[0])
                q = q - W'(1);                               // WRONG: ties to even
        end else if (k == 0) begin
            q = p;
        end else begin
            q = p <<< lshift;                                // k < 0: exact left shift by -k
        end

        // A1 ranges: signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1]
        if (out_signed) begin
            hi = (W'(1) <<< (out_bits - 6'd1)) - W'(1);
            lo = -(W'(1) <<< (out_bits - 6'd1));
        end else begin
            hi = (W'(1) <<< out_bits) - W'(1);
            lo = '0;
        end
        if (q > hi)      y = OUT_W'(hi);                     // A6: the one saturation
        else if (q < lo) y = OUT_W'(lo);
        else             y = OUT_W'(q);
    end
endmodule
