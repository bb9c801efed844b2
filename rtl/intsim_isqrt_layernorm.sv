// isqrt-layernorm row unit, docs/arithmetic.md section K4.2 (constants K4.2.1, steps K4.2.2,
// widths K4.2.3), with the exact integer square root of K4.1 and the gamma/beta stage of K4.0.3.
// One row of C values at a time:
//
//   LOAD   accept q (one per cycle, C of them): q~ = asr(q, p), keep q~ and the
//          sums s = sum q~, Q = sum q~^2; flag any q outside [in_lo, in_hi]      (steps 1-2, K4.0.2)
//   VAR    D = C*Q - s^2                                                          (step 3)
//   NORM   D == 0: a constant row, n = 0, straight to OUT                         (step 4)
//          else R = D*2^(2u) + E, L = bitlen(R), t = asr(62 - L, 1), N = R*2^(2t)  (steps 5-6)
//   SQRT   r = isqrt(N), K4.1's Newton iteration from x = 2^31: each floor(N / x) is a restoring
//          divider, one quotient bit per cycle (32 cycles), then y = (x + N/x) >> 1;
//          stop at the first y >= x (r = x)                                      (step 7)
//   RECIP  f = floor(2^56 / r) on the same divider (27 cycles)                    (step 8)
//   OUT    per element: n = asr((C*q~ - s) * f, sh), sh = 56 - F - t - u,
//          out = round_shift(n*g, h) + B, one per cycle                           (steps 8-10)
//
// Cycles per row: C (LOAD) + 2 + 32 * d + 27 + C (OUT), where d <= 7 is the number of divisions
// of the isqrt (K4.1.3: at most 7 on [2^60, 2^62), typically 4-6); a constant row takes C + 2 + C.
//
// Divider widths. On N in [2^60, 2^62) every Newton iterate x satisfies x >= r >= 2^30 (K4.1.2
// item 2), so N < 2^62 <= x * 2^32: the quotient has 32 bits, and the divider starts from the
// remainder N >> 32 < 2^30 <= x. For f: r >= 2^30 gives 2^56 / r <= 2^26 (27 quotient bits) and
// the starting remainder 2^56 >> 27 = 2^29 < r.
//
// The plan's constants arrive on ports (C, in_lo, in_hi, p, u, E, F, h) and through the coefficient
// write port (g[c], B[c], one channel per cycle); hold them stable while a row is in flight. The
// reciprocal width K = 56 and the 62-bit variance register are fixed by the spec and are
// localparams here. out_bits needs no port: the plan's choice of h proves |out| <= 2^(out_bits-1) - 1
// (K4.0.3), so out is the exact value, sign-extended to 32 bits. The products are written as `*`.

module intsim_isqrt_layernorm #(
    parameter int IN_W  = 24,     // K4.0.1: signed inputs of 2..24 bits (narrower ones sign-extended)
    parameter int MAX_C = 4096,   // longest row: the row buffer and the g, B memories
    parameter int G_W   = 24      // K4.0.3: gamma_bits G of 2..24 (narrower g sign-extended)
) (
    input  logic                    clk,
    input  logic                    rst_n,
    // plan constants (K4.0.3, K4.2.1); hold them stable while a row is in flight
    input  logic [$clog2(MAX_C+1)-1:0] C,       // row length, 1..MAX_C (u13 at MAX_C = 4096)
    input  logic signed [IN_W-1:0]  in_lo,      // the input format's ends (K4.0.2 range check)
    input  logic signed [IN_W-1:0]  in_hi,
    input  logic        [4:0]       p,          // pre-shift, 0..22
    input  logic        [4:0]       u,          // eps resolution, 0..30
    input  logic        [61:0]      E,          // eps term, R = D*4^u + E < 2^62
    input  logic        [4:0]       F,          // norm_bits, 4..24
    input  logic        [5:0]       h,          // output shift, 0..62
    // per-channel constants g[c], B[c] (write one channel per cycle)
    input  logic                    coef_we,
    input  logic [$clog2(MAX_C)-1:0] coef_addr, // channel c
    input  logic signed [G_W-1:0]   coef_g,
    input  logic signed [31:0]      coef_B,
    // inputs in (one row: C values, channel order)
    input  logic                    in_valid,
    input  logic signed [IN_W-1:0]  in_data,
    output logic                    in_ready,
    // outputs out, channel order, at the plan's output scale (K4.0.3)
    output logic                    out_valid,
    output logic signed [31:0]      out_data,
    output logic                    out_last,
    output logic                    out_err     // with out_valid: the row had a q outside [in_lo, in_hi]
                                                // (K4.0.2; the software raises IntOverflowError)
);
    localparam int K = 56;                       // reciprocal f = floor(2^K / r)
    localparam int RW = 62;                      // R, N < 2^62
    localparam int AW = $clog2(MAX_C + 1);       // row length 1..MAX_C
    localparam int IW = $clog2(MAX_C);           // channel index 0..MAX_C-1
    localparam int S_W = IN_W + AW;              // s: |s| <= C * 2^(IN_W-1), signed
    localparam int Q_W = 2 * (IN_W - 1) + AW;    // Q <= C * 2^(2(IN_W-1)), unsigned
    localparam int Y_W = S_W + 1;                // y' = C*q~ - s, signed
    localparam int DQ = 32;                      // isqrt quotient bits (N / x < 2^32)
    localparam int DF = K - 30 + 1;              // reciprocal quotient bits (f <= 2^26): 27

    typedef enum logic [2:0] {LOAD, VAR, NORM, SQRT, RECIP, OUT} state_t;
    state_t state;

    logic signed [IN_W-1:0] q_buf [MAX_C];       // q~ of the row
    logic signed [G_W-1:0]  g_mem [MAX_C];
    logic signed [31:0]     B_mem [MAX_C];

    logic        [AW-1:0]   j;                   // element index of LOAD and OUT
    logic signed [S_W-1:0]  s;                   // sum q~
    logic        [Q_W-1:0]  Q;                   // sum q~^2
    logic                   bad;                 // some q of the row outside [in_lo, in_hi]
    logic        [63:0]     D;                   // C*Q - s^2 in [0, 2^63 - 1]
    logic                   const_row;           // D == 0
    logic        [RW-1:0]   N;                   // normalised R
    logic        [4:0]      t;                   // normalisation shift, N = R * 4^t
    logic        [26:0]     f;                   // floor(2^56 / r) in (2^25, 2^26]

    // the divider: rem / den, dividend bits shifted in from num's top, quotient into quo
    logic        [31:0]     den;                 // SQRT: Newton's x; RECIP: r
    logic        [31:0]     rem;                 // < den
    logic        [31:0]     num;                 // dividend bits still to shift in (MSB first)
    logic        [30:0]     quo;                 // quotient bits decided so far
    logic        [4:0]      cnt;                 // quotient bits still to decide, minus 1

    // ---- LOAD datapath: steps 1-2 (combinational) ----
    logic signed [IN_W-1:0]   qt;                // q~ = asr(q, p)
    logic signed [2*IN_W-1:0] qt2;               // q~^2 >= 0
    always_comb begin
        qt = in_data >>> p;
        qt2 = qt * qt;
    end

    // ---- VAR datapath: step 3 (combinational). The plan's p bounds C*Q and s^2 by 2^63 - 1 ----
    logic        [S_W-1:0]  s_abs;               // |s| <= 2^35
    logic        [63:0]     CQ, s2, Dw;
    always_comb begin
        s_abs = (s < 0) ? S_W'(-s) : S_W'(s);
        CQ = 64'(C) * 64'(Q);
        s2 = 64'(s_abs) * 64'(s_abs);
        Dw = CQ - s2;
    end

    // ---- NORM datapath: steps 5-6 (combinational) ----
    logic        [RW-1:0]   R;                   // D * 2^(2u) + E < 2^62 (plan's choice of u)
    logic        [5:0]      L;                   // bitlen(R), 1..62
    logic        [4:0]      t_next;              // asr(62 - L, 1)
    always_comb begin
        R = RW'((D << {u, 1'b0}) + 64'(E));
        L = '0;
        for (int b = 0; b < RW; b++)
            if (R[b]) L = 6'(b + 1);
        t_next = 5'((7'd62 - 7'(L)) >> 1);
    end

    // ---- divider step (combinational): one quotient bit ----
    logic                   num_msb;             // the next dividend bit
    assign num_msb = num[31];
    logic        [32:0]     rem_next;            // {rem, next dividend bit}
    logic                   qbit;
    logic        [31:0]     rem_sub;
    logic        [31:0]     quo_full;            // the quotient once the last bit is decided
    logic        [32:0]     xy_sum;              // x + floor(N / x) < 2^33
    logic        [31:0]     y;                   // Newton's next iterate
    always_comb begin
        rem_next = {rem, num_msb};
        qbit = rem_next >= {1'b0, den};
        rem_sub = 32'(qbit ? rem_next - {1'b0, den} : rem_next);
        quo_full = {quo, qbit};
        xy_sum = {1'b0, den} + {1'b0, quo_full};
        y = 32'(xy_sum >> 1);                    // asr(x + floor(N/x), 1)
    end

    // ---- OUT datapath: steps 8-10 (combinational) ----
    logic        [IW-1:0]   c_idx;               // channel of the element
    assign c_idx = j[IW-1:0];
    logic        [5:0]      sh;                  // 56 - F - t - u in [2, 52]
    logic signed [AW:0]     C_s;
    logic signed [Y_W-1:0]  yq;                  // y' = C*q~ - s, |y'| < 2^36
    logic signed [28:0]     f_s;
    logic signed [63:0]     P;                   // y' * f, |P| < 2^62
    logic signed [31:0]     n;                   // asr(P, sh), |n| < 2^31
    logic signed [63:0]     ng;                  // n * g, |n g| < 2^54
    logic signed [63:0]     half;                // 2^(h-1), 0 for h = 0
    logic signed [63:0]     rs;                  // round_shift(n g, h)
    always_comb begin
        sh = 6'(7'(K) - 7'(F) - 7'(t) - 7'(u));
        C_s = $signed({1'b0, C});
        f_s = $signed({2'b0, f});
        yq = C_s * q_buf[c_idx] - s;
        P = yq * f_s;
        n = const_row ? 32'sd0 : 32'(P >>> sh);       // step 9; step 4: n = 0 (there y' = 0 too)
        ng = n * g_mem[c_idx];
        half = (h == 6'd0) ? 64'sd0 : (64'sd1 <<< (h - 6'd1));
        rs = (ng + half) >>> h;                                         // step 10: half up
        out_data = 32'(rs + 64'(B_mem[c_idx]));
    end

    assign in_ready = (state == LOAD);
    assign out_valid = (state == OUT);
    assign out_last = (state == OUT) && (j == C - AW'(1));
    assign out_err = bad;

    always_ff @(posedge clk) begin
        if (coef_we) begin
            g_mem[coef_addr] <= coef_g;
            B_mem[coef_addr] <= coef_B;
        end
    end

    always_ff @(posedge clk or negedge rst_n) begin
        if (!rst_n) begin
            state <= LOAD;
            j <= '0;
            s <= '0;
            Q <= '0;
            bad <= 1'b0;
            D <= '0;
            const_row <= 1'b0;
            N <= '0;
            t <= '0;
            f <= '0;
            den <= '0;
            rem <= '0;
            num <= '0;
            quo <= '0;
            cnt <= '0;
        end else begin
            case (state)
                LOAD: if (in_valid) begin                                // steps 1-2, K4.0.2
                    q_buf[j[IW-1:0]] <= qt;
                    s <= ((j == '0) ? S_W'(0) : s) + S_W'(qt);
                    Q <= ((j == '0) ? Q_W'(0) : Q) + Q_W'(qt2);
                    bad <= ((j == '0) ? 1'b0 : bad) | (in_data < in_lo) | (in_data > in_hi);
                    if (j == C - AW'(1)) begin
                        state <= VAR;
                        j <= '0;
                    end else
                        j <= j + AW'(1);
                end
                VAR: begin                                               // step 3
                    D <= Dw;
                    state <= NORM;
                end
                NORM: begin
                    const_row <= (D == '0);
                    if (D == '0)                                         // step 4
                        state <= OUT;
                    else begin                                           // steps 5-6, start step 7
                        t <= t_next;
                        N <= R << {t_next, 1'b0};
                        den <= 32'h8000_0000;                            // x0 = 2^ceil(bitlen(N)/2) = 2^31
                        rem <= 32'((R << {t_next, 1'b0}) >> DQ);
                        num <= 32'(R << {t_next, 1'b0});
                        quo <= '0;
                        cnt <= 5'(DQ - 1);
                        state <= SQRT;
                    end
                end
                SQRT: begin                                              // step 7: K4.1 Newton
                    rem <= rem_sub;
                    num <= num << 1;
                    quo <= 31'(quo_full);
                    cnt <= cnt - 5'd1;
                    if (cnt == '0) begin                                 // floor(N / x) is quo_full
                        if (y >= den) begin                              // first non-decrease: r = x
                            rem <= 32'(64'(1) << (K - DF));              // 2^56, top bits: 2^29 < r
                            num <= '0;
                            quo <= '0;
                            cnt <= 5'(DF - 1);
                            state <= RECIP;
                        end else begin                                   // x = y, divide again
                            den <= y;
                            rem <= 32'(N >> DQ);
                            num <= 32'(N);
                            quo <= '0;
                            cnt <= 5'(DQ - 1);
                        end
                    end
                end
                RECIP: begin                                             // step 8: f = 2^56 / r
                    rem <= rem_sub;
                    num <= num << 1;
                    quo <= 31'(quo_full);
                    cnt <= cnt - 5'd1;
                    if (cnt == '0) begin
                        f <= 27'(quo_full);
                        state <= OUT;
                    end
                end
                OUT: begin                                               // steps 9-10, one per cycle
                    if (j == C - AW'(1)) begin
                        state <= LOAD;
                        j <= '0;
                    end else
                        j <= j + AW'(1);
                end
                default: state <= LOAD;
            endcase
        end
    end
endmodule
