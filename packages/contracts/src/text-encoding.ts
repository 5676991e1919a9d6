/**
 * UTF-8 for protobuf-es, faster for the short ASCII strings that fill the contracts (ids, names,
 * subjects, trait keys). protobuf-es converts every string field through the Text Encoding API,
 * and in Node 20 each `TextEncoder.encode`/`TextDecoder.decode` call crosses into C++: for a
 * 10-character id that crossing costs more than the bytes. Strings up to `SHORT` code units that
 * are pure ASCII are converted in JavaScript (ASCII is the same bytes in UTF-8, and always valid);
 * anything else goes to the Text Encoding API exactly as protobuf-es's default does.
 */
import { configureTextEncoding } from "@bufbuild/protobuf/wire";

const SHORT = 64;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export function encodeUtf8(text: string): Uint8Array<ArrayBuffer> {
  const n = text.length;
  if (n > SHORT) return encoder.encode(text);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) return encoder.encode(text);
    out[i] = c;
  }
  return out;
}

export function decodeUtf8(bytes: Uint8Array, strict = false): string {
  const n = bytes.length;
  if (n <= SHORT) {
    let s = "";
    for (let i = 0; i < n; i++) {
      const c = bytes[i]!;
      if (c > 0x7f) return strict ? strictDecoder.decode(bytes) : decoder.decode(bytes);
      s += String.fromCharCode(c);
    }
    return s;
  }
  return strict ? strictDecoder.decode(bytes) : decoder.decode(bytes);
}

/** protobuf-es's own check: a string with a lone surrogate cannot be encoded as UTF-8. */
function checkUtf8(text: string): boolean {
  try {
    encodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}

configureTextEncoding({ encodeUtf8, decodeUtf8, checkUtf8 });
