// A row's root mean square, for the kernels that give each row a workgroup and normalise it
// (rms_norm.wgsl, rms_norm_grad.wgsl): put after row_reduce.wgsl and before the file, which
// declares `x` and `params` (rows, width, groups_x, eps_bits).

// sqrt(mean(x^2) + eps) of the row at `base`, for every invocation of the workgroup; `partial`
// is free again when it returns.
fn row_rms(base: u32, lid: u32) -> f32 {
    var sum = 0.0;
    for (var i = lid; i < params.width; i = i + WG) {
        let v = x[base + i];
        sum = sum + v * v;
    }
    partial[lid] = sum;
    workgroupBarrier();
    reduce_sum(lid);
    let rms = sqrt(partial[0] / f32(params.width) + bitcast<f32>(params.eps_bits));
    workgroupBarrier();
    return rms;
}
