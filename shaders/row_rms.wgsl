// A row's root mean square, for the kernels that normalise rows (rms_norm.wgsl,
// rms_norm_grad.wgsl) with a workgroup per row, or an invocation per row: put after
// row_reduce.wgsl and before the file, which declares `x` and `params` (rows, width, groups_x,
// eps_bits).

// The sum of x^2 over the row at `base`'s elements first, first + stride, ...
fn squares(base: u32, first: u32, stride: u32) -> f32 {
    var sum = 0.0;
    for (var i = first; i < params.width; i = i + stride) {
        let v = x[base + i];
        sum = sum + v * v;
    }
    return sum;
}

fn rms_of(sum_of_squares: f32) -> f32 {
    return sqrt(sum_of_squares / f32(params.width) + bitcast<f32>(params.eps_bits));
}

// sqrt(mean(x^2) + eps) of the row at `base`, for every invocation of the workgroup; `partial`
// is free again when it returns.
fn row_rms(base: u32, lid: u32) -> f32 {
    partial[lid] = squares(base, lid, WG);
    workgroupBarrier();
    reduce_sum(lid);
    let rms = rms_of(partial[0]);
    workgroupBarrier();
    return rms;
}

// The same for an invocation that has the row to itself.
fn lane_rms(base: u32) -> f32 {
    return rms_of(squares(base, 0u, 1u));
}
