// bitshift-softmax row unit, docs/arithmetic.md section K2.1 (constants K2.1.1, tables K2.1.2,
// steps K2.1.3). One row at a time, three passes over a row buffer:
//
//   LOAD  accept the row's logits q (one per cycle), keep the row maximum m          (K2.0.3)
//   EXP   per element: D = m - q, T = (D*K) >> G, z = T >> F, r = T mod 2^F,
//         i = r >> 16, rho = r mod 2^16, y = C[i] - ((rho*DS[i]) >> 16),
//         e = y >> min(z, Z_MAX); store e and add it to the row sum                   (steps 1-6)
//   DIV   R = floor(2^N / sum): a restoring divider, one quotient bit per cycle        (step 7)
//   OUT   per element: out = min((e*R + 2^(N-1-O)) >> (N-O), 2^O - 1), one per cycle  (step 8)
//
// The plan's constants arrive on ports (K, G, out_bits O, the tables C and DS); the structural ones
// (F = 20, SEG_BITS = 4, Q = 30, N = 62, Z_MAX = 31) are fixed by the spec and are localparams here:
// the testbench checks that every plan it drives carries these values.
//
// D*K is written as a product; the spec's shift-add of <= 9 CSD digits gives the same integer.
//
// Z_CLAMP = 0 builds a deliberately WRONG variant (the testbench must reject it): the exponent shift
// uses z's low 6 bits without the min(z, 31) clamp, as a C or NumPy `>>` on a 64-bit word does
// (shift counts taken mod 64). It differs from the spec only when z >= 64 (bin K2.1.z_ge_64).

module intsim_softmax_bitshift #(
    parameter int IN_W  = 16,     // K2.0.1: signed logits, 2..16 bits (narrower inputs sign-extended)
    parameter int MAX_L = 256,    // longest row (depth of the row buffers)
    parameter bit Z_CLAMP = 1'b1  // 0: WRONG variant for testbench self-checks
) (
    input  logic                   clk,
    input  logic                   rst_n,
    // plan constants (K2.1.1); hold them stable while a row is in flight
    input  logic        [62:0]     K,          // D*K <= 2^62 (K2.1.4)
    input  logic        [5:0]      G,          // 0..62
    input  logic        [4:0]      out_bits,   // O: 2..16
    input  logic [15:0][30:0]      C,          // K2.1.2 chord knots C[0..15]
    input  logic [15:0][25:0]      DS,         // K2.1.2 floored chord slopes DS[0..15]
    // logits in (one row, in_last on its final element)
    input  logic                   in_valid,
    input  logic signed [IN_W-1:0] in_data,
    input  logic                   in_last,
    output logic                   in_ready,
    // probabilities out, unsigned O bits at scale 2^-O, row order
    output logic                   out_valid,
    output logic        [15:0]     out_data,
    output logic                   out_last
);
    localparam int F = 20;           // fraction bits of the base-2 exponent T
    localparam int SEG_BITS = 4;     // 16 chords
    localparam int Q = 30;           // e(0) = 2^Q
    localparam int N = 62;           // reciprocal R = floor(2^N / sum)
    localparam int Z_MAX = Q + 1;    // y >> 31 = 0 for every y <= 2^30
    localparam int AW = $clog2(MAX_L + 1);   // row length 1..MAX_L
    localparam int IW = $clog2(MAX_L);       // buffer index 0..MAX_L-1
    localparam int SUM_W = Q + 1 + AW;   // sum <= L * 2^30

    typedef enum logic [1:0] {LOAD, EXP, DIV, OUT} state_t;
    state_t state;

    logic signed [IN_W-1:0] q_buf [MAX_L];
    logic        [Q:0]      e_buf [MAX_L];
    logic        [AW-1:0]   len;        // elements in the row
    logic        [AW-1:0]   j;          // element index of EXP and OUT
    logic signed [IN_W-1:0] row_max;
    logic        [SUM_W-1:0] sum;
    logic        [5:0]      div_bit;    // quotient bit being decided, N .. 0
    logic        [SUM_W:0]  rem;        // divider remainder (< sum, one bit of headroom)
    logic        [N:0]      recip;      // R; at most 2^32 since sum >= 2^30

    // ---- EXP datapath: e(D) of K2.1.3 steps 1-5 (combinational) ----
    logic        [IN_W:0]   D;          // m - q in [0, 2^IN_W - 1]
    logic        [IN_W+63:0] DK;        // D*K, exact
    logic        [62:0]     T;          // (D*K) >> G; < 2^63 because D*K <= 2^62
    logic        [42:0]     z;          // integer part of T
    logic        [F-1:0]    r;          // fraction of T
    logic        [SEG_BITS-1:0] seg;    // chord index i (top 4 bits of r)
    logic        [F-SEG_BITS-1:0] rho;  // position inside the chord
    logic        [41:0]     rho_ds;     // rho * DS[i] < 2^42
    logic        [Q:0]      y;          // C[i] - ((rho*DS[i]) >> 16), in (2^29, 2^30]
    logic        [5:0]      shamt;      // min(z, Z_MAX) (WRONG variant: z mod 64)
    logic        [Q:0]      e;

    always_comb begin
        D = (IN_W + 1)'(row_max) - (IN_W + 1)'(q_buf[j[IW-1:0]]);
        DK = (IN_W + 64)'(D) * (IN_W + 64)'(K);
        T = 63'(DK >> G);
        z = T[62:F];
        r = T[F-1:0];
        seg = r[F-1:F-SEG_BITS];
        rho = r[F-SEG_BITS-1:0];
        rho_ds = 42'(rho) * 42'(DS[seg]);
        y = C[seg] - (Q + 1)'(rho_ds >> (F - SEG_BITS));
        if (Z_CLAMP)
            shamt = (z >= 43'(Z_MAX)) ? 6'(Z_MAX) : z[5:0];     // step 5: min(z, 31)
        else
            shamt = z[5:0];                                     // WRONG: no clamp, z mod 64
        e = y >> shamt;
    end

    // ---- OUT datapath: K2.1.3 step 8 (combinational) ----
    logic [63:0] eR;          // e * R <= 2^62
    logic [63:0] rounded;     // (e*R + 2^(N-1-O)) >> (N-O)
    logic [16:0] out_max;     // 2^O - 1
    always_comb begin
        eR = 64'(e_buf[j[IW-1:0]]) * 64'(recip);
        rounded = (eR + (64'(1) << (6'(N - 1) - 6'(out_bits)))) >> (6'(N) - 6'(out_bits));
        out_max = (17'(1) << out_bits) - 17'(1);
        out_data = (rounded > 64'(out_max)) ? out_max[15:0] : rounded[15:0];   // saturation
    end

    // remainder after shifting in the next numerator bit (2^N has only bit N set)
    logic [SUM_W+1:0] rem_next;
    always_comb rem_next = {rem, (div_bit == 6'(N))};

    assign in_ready = (state == LOAD) && (len < AW'(MAX_L));   // rows longer than MAX_L stall
    assign out_valid = (state == OUT);
    assign out_last = (state == OUT) && (j == len - AW'(1));

    always_ff @(posedge clk or negedge rst_n) begin
        if (!rst_n) begin
            state <= LOAD;
            len <= '0;
            j <= '0;
            row_max <= '0;
            sum <= '0;
            rem <= '0;
            recip <= '0;
            div_bit <= '0;
        end else begin
            case (state)
                LOAD: if (in_valid && in_ready) begin                        // K2.0.3: row maximum
                    q_buf[len[IW-1:0]] <= in_data;
                    row_max <= (len == '0 || in_data > row_max) ? in_data : row_max;
                    len <= len + AW'(1);
                    if (in_last) begin
                        state <= EXP;
                        j <= '0;
                        sum <= '0;
                    end
                end
                EXP: begin                                       // steps 1-6
                    e_buf[j[IW-1:0]] <= e;
                    sum <= sum + SUM_W'(e);
                    if (j == len - AW'(1)) begin
                        state <= DIV;
                        div_bit <= 6'(N);
                        rem <= '0;
                        recip <= '0;
                    end else
                        j <= j + AW'(1);
                end
                DIV: begin                                       // step 7: restoring division
                    if (rem_next >= (SUM_W + 2)'(sum)) begin
                        rem <= (SUM_W + 1)'(rem_next - (SUM_W + 2)'(sum));
                        recip <= {recip[N-1:0], 1'b1};
                    end else begin
                        rem <= (SUM_W + 1)'(rem_next);
                        recip <= {recip[N-1:0], 1'b0};
                    end
                    if (div_bit == '0) begin
                        state <= OUT;
                        j <= '0;
                    end else
                        div_bit <= div_bit - 6'd1;
                end
                OUT: begin                                       // step 8, one element per cycle
                    if (j == len - AW'(1)) begin
                        state <= LOAD;
                        len <= '0;
                    end else
                        j <= j + AW'(1);
                end
            endcase
        end
    end
endmodule
