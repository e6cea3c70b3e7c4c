// The ustar subset a checkpoint needs: plain files, names under 100 bytes. A downloaded
// checkpoint unpacks (`tar xf`) into a run directory the native `sgpo` reads, and a native run
// directory packed with `tar cf` uploads back.
const BLOCK = 512;
const enc = new TextEncoder();
const dec = new TextDecoder();

function field(header, offset, length, text) {
  header.set(enc.encode(text).subarray(0, length), offset);
}

const octal = (n, width) => n.toString(8).padStart(width - 1, "0") + "\0";

/// `files`: [{name, bytes: Uint8Array}] → the archive.
export function tar(files) {
  const parts = [];
  for (const { name, bytes } of files) {
    if (enc.encode(name).length >= 100) throw new Error(`tar: name too long: ${name}`);
    const h = new Uint8Array(BLOCK);
    field(h, 0, 100, name);
    field(h, 100, 8, octal(0o644, 8));
    field(h, 108, 8, octal(0, 8));
    field(h, 116, 8, octal(0, 8));
    field(h, 124, 12, octal(bytes.length, 12));
    field(h, 136, 12, octal(Math.floor(Date.now() / 1000), 12));
    field(h, 148, 8, "        ");
    h[156] = "0".charCodeAt(0);
    field(h, 257, 6, "ustar\0");
    field(h, 263, 2, "00");
    const sum = h.reduce((a, b) => a + b, 0);
    field(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
    parts.push(h, bytes, new Uint8Array((BLOCK - (bytes.length % BLOCK)) % BLOCK));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const text = (bytes) => dec.decode(bytes.subarray(0, bytes.indexOf(0) < 0 ? bytes.length : bytes.indexOf(0)));

/// The archive's regular files: [{name, bytes}]. Throws, naming the offset, on a broken header.
export function untar(archive) {
  const files = [];
  let longName = null;
  for (let at = 0; at + BLOCK <= archive.length;) {
    const h = archive.subarray(at, at + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = parseInt(text(h.subarray(124, 136)).trim() || "0", 8);
    if (Number.isNaN(size)) throw new Error(`not a tar archive (bad header at byte ${at})`);
    const type = String.fromCharCode(h[156] || 48);
    const prefix = text(h.subarray(345, 500));
    let name = longName ?? (prefix ? `${prefix}/` : "") + text(h.subarray(0, 100));
    longName = null;
    const body = archive.subarray(at + BLOCK, at + BLOCK + size);
    if (type === "L") longName = text(body); // GNU tar's long names
    else if (type === "0") files.push({ name: name.replace(/^\.\//, ""), bytes: body.slice() });
    at += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  if (!files.length) throw new Error("not a tar archive, or an empty one");
  return files;
}
