// A workgroup's reduction over one row, for the kernels that give each row a workgroup
// (prepended to their files by src/kernels): each invocation leaves its share in
// partial[lid] and passes a barrier, then reduce_max or reduce_sum leaves the row's result in
// partial[0] for all to read (pass another barrier before writing partial again).

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn reduce_max(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
}

fn reduce_sum(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
}

