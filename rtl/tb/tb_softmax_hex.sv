// Plain SystemVerilog testbench (no cocotb): replays one softmax layer of a golden dump written
// with --format hex through intsim_softmax_bitshift ($readmemh) and compares every probability.
// docs/golden.md quotes the part between `doc:begin` and `doc:end`; tests/test_rtl.py builds it
// with `verilator --binary` and runs it on golden/fmnist_w8a8 (+gold=DIR).
`timescale 1ns / 1ps
module tb_softmax_hex;
    // doc:begin
    // softmax of block 0, W8A8, two images: act/blocks.0.attn.softmax.in is s16 and
    // act/blocks.0.attn.softmax is u16 (softmax_bits = 16), both of shape [2, 4, 50, 50]
    localparam int L = 50, ROWS = 2 * 4 * 50, N = ROWS * L;
    logic signed [15:0] gold_x [N];       // logits, one s16 per hex word (4 digits)
    logic        [15:0] gold_p [N];       // probabilities, u16 (4 digits)
    logic        [62:0] K [1];            // scalar constants are one word each
    logic        [5:0]  G [1];
    logic        [4:0]  O [1];            // const/...softmax.out_bits
    logic [30:0] C_tab [16];              // const/...softmax.C: 16 words
    logic [25:0] DS_tab [16];
    string dir;
    initial begin
        if (!$value$plusargs("gold=%s", dir)) $fatal(1, "usage: +gold=DUMP_DIR");
        $readmemh({dir, "/act/blocks.0.attn.softmax.in.hex"}, gold_x);
        $readmemh({dir, "/act/blocks.0.attn.softmax.hex"}, gold_p);
        $readmemh({dir, "/const/blocks.0.attn.softmax.K.hex"}, K);
        $readmemh({dir, "/const/blocks.0.attn.softmax.G.hex"}, G);
        $readmemh({dir, "/const/blocks.0.attn.softmax.out_bits.hex"}, O);
        $readmemh({dir, "/const/blocks.0.attn.softmax.C.hex"}, C_tab);
        $readmemh({dir, "/const/blocks.0.attn.softmax.DS.hex"}, DS_tab);
    end
    // doc:end

    logic clk, rst_n, in_valid, in_last, in_ready, out_valid, out_last;
    initial clk = 1'b0;
    always #5 clk = ~clk;
    logic signed [15:0] in_data;
    logic [15:0] out_data;
    logic [15:0][30:0] C;
    logic [15:0][25:0] DS;
    always_comb for (int i = 0; i < 16; i++) begin
        C[i] = C_tab[i];
        DS[i] = DS_tab[i];
    end

    intsim_softmax_bitshift #(.IN_W(16), .MAX_L(256)) dut (
        .clk, .rst_n, .K(K[0]), .G(G[0]), .out_bits(O[0]), .C, .DS,
        .in_valid, .in_data, .in_last, .in_ready, .out_valid, .out_data, .out_last);

    // doc:begin
    /* verilator lint_off PROCASSINIT */
    int idx = 0, errors = 0;
    /* verilator lint_on PROCASSINIT */
    always @(negedge clk) if (out_valid) begin      // the DUT streams probabilities in row order
        if (out_data !== gold_p[idx]) begin
            if (errors < 5) $error("softmax[%0d]: dut %0d, golden %0d", idx, out_data, gold_p[idx]);
            errors <= errors + 1;
        end
        if (out_last && (idx + 1) % L != 0) $error("out_last at element %0d", idx);
        idx <= idx + 1;
    end
    // doc:end

    initial begin
        rst_n = 1'b0;
        in_valid = 1'b0;
        in_last = 1'b0;
        in_data = '0;
        repeat (2) @(negedge clk);
        rst_n = 1'b1;
        for (int r = 0; r < ROWS; r++) begin
            while (!in_ready) @(negedge clk);
            for (int j = 0; j < L; j++) begin          // one logit per cycle, driven on negedge
                in_valid = 1'b1;
                in_data = gold_x[r * L + j];
                in_last = (j == L - 1);
                @(negedge clk);
            end
            in_valid = 1'b0;
            in_last = 1'b0;
            while (idx < (r + 1) * L) @(negedge clk);
        end
        if (errors != 0) $fatal(1, "FAIL: %0d of %0d probabilities differ", errors, N);
        $display("PASS: %0d probabilities match the golden dump bit for bit", N);
        $finish;
    end
endmodule
