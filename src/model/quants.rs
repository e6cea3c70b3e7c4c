//! llama.cpp's tensor types, dequantised to f32: F32, F16, BF16, the 32-value blocks Q8_0,
//! Q4_0 and Q4_1, and the 256-value super-blocks Q4_K, Q5_K and Q6_K (layouts as
//! `ggml-common.h` declares them).

pub const SUPPORTED: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K";

const NAMES: [(u32, &str); 13] = [
    (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (6, "Q5_0"), (7, "Q5_1"), (8, "Q8_0"),
    (10, "Q2_K"), (11, "Q3_K"), (12, "Q4_K"), (13, "Q5_K"), (14, "Q6_K"), (30, "BF16"),
];

pub fn type_name(kind: u32) -> String {
    NAMES.iter().find(|t| t.0 == kind).map_or(format!("type {kind}"), |t| t.1.to_string())
}

/// (values per block, bytes per block) of a type this loader reads.
pub fn block(kind: u32) -> Option<(usize, usize)> {
    match kind {
        0 => Some((1, 4)),
        1 | 30 => Some((1, 2)),
        2 => Some((32, 18)),
        3 => Some((32, 20)),
        8 => Some((32, 34)),
        12 => Some((256, 144)),
        13 => Some((256, 176)),
        14 => Some((256, 210)),
        _ => None,
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K super-block.
fn scale_min(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// Append the values of `data` (whole blocks of type `kind`) to `out`.
pub fn dequantize(kind: u32, data: &[u8], out: &mut Vec<f32>) {
    match kind {
        0 => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        1 => out.extend(data.chunks_exact(2).map(f16)),
        30 => out.extend(data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        // 32 values: scale d (and min m), then 16 bytes of nibbles (low nibbles first).
        2 | 3 => {
            let (size, qs_at) = if kind == 2 { (18, 2) } else { (20, 4) };
            for blk in data.chunks_exact(size) {
                let d = f16(&blk[0..2]);
                let (m, offset) = if kind == 2 { (0.0, -8.0) } else { (f16(&blk[2..4]), 0.0) };
                let qs = &blk[qs_at..qs_at + 16];
                out.extend(qs.iter().map(|q| ((q & 0xF) as f32 + offset) * d + m));
                out.extend(qs.iter().map(|q| ((q >> 4) as f32 + offset) * d + m));
            }
        }
        // 32 values: scale d, then 32 signed bytes.
        8 => {
            for blk in data.chunks_exact(34) {
                let d = f16(&blk[0..2]);
                out.extend(blk[2..].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        // 256 values: d, dmin, 12 bytes of packed 6-bit scales and mins, [32 high bits,]
        // 128 bytes of nibbles; 64 values per pair of sub-blocks.
        12 | 13 => {
            let size = if kind == 12 { 144 } else { 176 };
            for blk in data.chunks_exact(size) {
                let (d, dmin) = (f16(&blk[0..2]), f16(&blk[2..4]));
                let scales = &blk[4..16];
                let (qh, qs) = if kind == 12 { (&[][..], &blk[16..144]) } else { (&blk[16..48], &blk[48..176]) };
                for pair in 0..4 {
                    let q = &qs[pair * 32..pair * 32 + 32];
                    for (half, shift) in [(0, 0), (1, 4)] {
                        let (sc, m) = scale_min(pair * 2 + half, scales);
                        let bit = 1u8 << (pair * 2 + half);
                        out.extend((0..32).map(|l| {
                            let high = if qh.is_empty() || qh[l] & bit == 0 { 0.0 } else { 16.0 };
                            d * sc * (((q[l] >> shift) & 0xF) as f32 + high) - dmin * m
                        }));
                    }
                }
            }
        }
        // 256 values: 128 bytes of low nibbles, 64 of high bit pairs, 16 signed scales, d.
        14 => {
            for blk in data.chunks_exact(210) {
                let d = f16(&blk[208..210]);
                for n in 0..2 {
                    let ql = &blk[n * 64..n * 64 + 64];
                    let qh = &blk[128 + n * 32..128 + n * 32 + 32];
                    let sc = &blk[192 + n * 8..192 + n * 8 + 8];
                    let mut y = [0.0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * (sc[is + k] as i8) as f32;
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(2) * q2 as f32;
                        y[l + 64] = s(4) * q3 as f32;
                        y[l + 96] = s(6) * q4 as f32;
                    }
                    out.extend(y);
                }
            }
        }
        _ => unreachable!("checked by block()"),
    }
}
