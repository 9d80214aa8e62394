#!/usr/bin/env node
// A dependency-free JavaScript implementation of dot-product and scaled dot-product
// attention that checks itself against attnspec's golden vectors.
//
//   node check-vectors.mjs [VECTOR_DIR]
//
// VECTOR_DIR defaults to spec/attnspec/vectors of this checkout. The exit code is 0
// when every applicable case passes, 1 otherwise. It shows that the vectors need no
// Python: floats are C99 hex strings, arrays are {dtype, shape, data} in row-major
// order, and each file states its tolerance rule (see schema.json).
//
// Implemented, as the spec states them: score_dot, score_scaled_dot,
// attention_distribution (boolean or additive mask, fully masked rows give zero),
// log_sum_exp (-inf for a fully masked row), attention_value, attention with score
// "dot" or "scaled_dot", and scaled_dot_product_attention (causal in both alignments,
// grouped query heads, sinks, return_lse). Cases with complex inputs, other score
// kinds or the restrictions (softcap, window, query_offset, key_lengths) are skipped
// and counted.

import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// --- the spec's error classes -------------------------------------------------------------

class AttnSpecError extends Error {}
class ShapeError extends AttnSpecError {}
class DTypeError extends AttnSpecError {}
class NonFiniteInputError extends AttnSpecError {}
class ArgumentError extends AttnSpecError {}
class Unsupported extends Error {}

// --- decoding -----------------------------------------------------------------------------

const HEX_FLOAT = /^(-?)0x([01])\.([0-9a-f]+)p([+-][0-9]+)$/;

/** A float64 from the hex string Python's float.hex writes; exact. */
export function parseHexFloat(text) {
  if (text === "inf") return Infinity;
  if (text === "-inf") return -Infinity;
  if (text === "nan") return NaN;
  const m = HEX_FLOAT.exec(text);
  if (m === null) throw new Error(`not a hex float: ${JSON.stringify(text)}`);
  const digits = m[3];
  // At most 13 hex digits after the point, so the integer mantissa has at most 53 bits
  // and both factors below are exact; their product is the float itself.
  const mantissa = Number(m[2]) * 2 ** (4 * digits.length) + parseInt(digits, 16);
  const value = mantissa * 2 ** (Number(m[4]) - 4 * digits.length);
  return m[1] === "-" ? -value : value;
}

function decodeArray(obj) {
  const { dtype, shape, data } = obj;
  if (dtype === "float64") return { dtype, shape, data: Float64Array.from(data, parseHexFloat) };
  if (dtype === "bool") return { dtype, shape, data: Uint8Array.from(data, (b) => (b ? 1 : 0)) };
  if (dtype === "int64") return { dtype, shape, data: Float64Array.from(data) };
  if (dtype === "complex128") throw new Unsupported("complex inputs");
  throw new Error(`unknown dtype ${dtype}`);
}

function decodeValue(value) {
  if (value !== null && typeof value === "object" && "dtype" in value) return decodeArray(value);
  if (value !== null && typeof value === "object" && "float" in value) return parseHexFloat(value.float);
  return value;
}

// --- arrays -------------------------------------------------------------------------------

const product = (shape) => shape.reduce((a, b) => a * b, 1);

function broadcastShapes(...shapes) {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array(rank).fill(1);
  for (const shape of shapes) {
    shape.forEach((size, i) => {
      const j = rank - shape.length + i;
      if (out[j] === 1) out[j] = size;
      else if (size !== 1 && size !== out[j]) {
        throw new ShapeError(`shapes ${JSON.stringify(shapes)} do not broadcast`);
      }
    });
  }
  return out;
}

function* indices(shape) {
  const n = product(shape);
  const index = new Array(shape.length).fill(0);
  for (let count = 0; count < n; count++) {
    yield index.slice();
    for (let axis = shape.length - 1; axis >= 0; axis--) {
      if (++index[axis] < shape[axis]) break;
      index[axis] = 0;
    }
  }
}

/** Flat offset of a (right-aligned, broadcast) index into an array of this shape. */
function offset(shape, index) {
  let off = 0;
  let stride = 1;
  for (let i = shape.length - 1, j = index.length - 1; i >= 0; i--, j--) {
    off += (shape[i] === 1 ? 0 : index[j]) * stride;
    stride *= shape[i];
  }
  return off;
}

function zeros(shape) {
  return { dtype: "float64", shape, data: new Float64Array(product(shape)) };
}

// --- argument checks (the spec's general clauses) -------------------------------------------

function floating(name, a) {
  if (a === null || typeof a !== "object" || a.dtype !== "float64") {
    throw new DTypeError(`${name} must be a floating array; got ${a?.dtype ?? typeof a}`);
  }
}

function sequence(name, a) {
  floating(name, a);
  if (a.shape.length < 2) throw new ShapeError(`${name} must have rank >= 2; got ${a.shape}`);
  if (a.shape.at(-1) < 1) throw new ShapeError(`${name}.shape[-1] must be at least 1`);
}

function sameSize(name, a, other, b) {
  if (a !== b) throw new ShapeError(`${name} must equal ${other}; got ${a} and ${b}`);
}

function scaleValue(scale) {
  if (scale === null || scale === undefined) return null;
  if (typeof scale !== "number") throw new DTypeError(`scale must be a real number; got ${typeof scale}`);
  if (!Number.isFinite(scale)) throw new ArgumentError(`scale must be finite; got ${scale}`);
  return scale;
}

function flag(name, value) {
  if (typeof value !== "boolean") throw new DTypeError(`${name} must be a boolean; got ${value}`);
  return value;
}

/** allowed(index) and bias(index) of an optional boolean or additive mask over `shape`. */
function maskParts(mask, shape) {
  if (mask === null || mask === undefined) {
    return { shape, allowed: () => true, bias: () => 0 };
  }
  if (mask.dtype !== "bool" && mask.dtype !== "float64") {
    throw new DTypeError(`mask must be boolean or floating; got ${mask.dtype}`);
  }
  let full;
  try {
    full = broadcastShapes(shape, mask.shape);
  } catch {
    throw new ShapeError(`mask of shape ${mask.shape} does not broadcast to ${shape}`);
  }
  if (mask.dtype === "bool") {
    return { shape: full, allowed: (i) => mask.data[offset(mask.shape, i)] === 1, bias: () => 0 };
  }
  for (const m of mask.data) {
    if (Number.isNaN(m) || m === Infinity) throw new NonFiniteInputError(`mask holds ${m}`);
  }
  const at = (i) => mask.data[offset(mask.shape, i)];
  return { shape: full, allowed: (i) => at(i) !== -Infinity, bias: at };
}

// --- the attention steps ------------------------------------------------------------------

/**
 * Softmax over the allowed keys of one row and its log-sum-exp: { weights, lse }.
 *
 * `halves[j]` is half the logit, (score + bias) / 2, or null for a key that is not
 * allowed: a finite score plus a finite bias can exceed the float64 range (-1e308 +
 * -1e308) although the key is allowed, and halves cannot. 2 * (x - max) rounds like
 * (score + bias) - max and overflows only towards -inf, where exp gives the right 0.
 * `sinkHalf` is half a sink logit (sdpa.sinks), which joins the denominator and the
 * shift but no numerator, or null. A row with no allowed key has zero weights and
 * lse -inf (lse.fully-masked-row), or the sink with one.
 */
function softmaxRow(halves, sinkHalf = null) {
  const out = new Float64Array(halves.length);
  let shift = sinkHalf ?? -Infinity;
  for (const x of halves) if (x !== null && x > shift) shift = x;
  if (shift === -Infinity) return { weights: out, lse: -Infinity }; // distribution.fully-masked-row
  let total = sinkHalf === null ? 0 : Math.exp(2 * (sinkHalf - shift));
  halves.forEach((x, j) => {
    if (x !== null) total += out[j] = Math.exp(2 * (x - shift));
  });
  // lse.stable: 2 * shift overflows only where the log-sum-exp itself does.
  return { weights: out.map((e) => e / total), lse: 2 * shift + Math.log(total) };
}

function checkFinite(name, a, read) {
  a.data.forEach((x, i) => {
    if ((read === undefined || read[i]) && !Number.isFinite(x)) {
      throw new NonFiniteInputError(`${name} holds ${x} at a read position`);
    }
  });
}

export function scoreDot(query, keys, scale = 1) {
  sequence("query", query);
  sequence("keys", keys);
  if (keys.shape.at(-2) < 1) throw new ShapeError("keys.shape[-2] must be at least 1");
  const d = query.shape.at(-1);
  sameSize("keys.shape[-1]", keys.shape.at(-1), "query.shape[-1]", d);
  const batch = broadcastShapes(query.shape.slice(0, -2), keys.shape.slice(0, -2));
  checkFinite("query", query);
  checkFinite("keys", keys);
  const [tq, tk] = [query.shape.at(-2), keys.shape.at(-2)];
  const out = zeros([...batch, tq, tk]);
  let n = 0;
  for (const b of indices([...batch, tq, tk])) {
    const bi = b.slice(0, -1);
    const bj = [...b.slice(0, -2), b.at(-1)];
    let sum = 0;
    for (let c = 0; c < d; c++) {
      sum += query.data[offset(query.shape, [...bi, c])] * keys.data[offset(keys.shape, [...bj, c])];
    }
    out.data[n++] = sum * scale;
  }
  return out;
}

function defaultScale(d) {
  return 1 / Math.sqrt(d);
}

export function scoreScaledDot(query, keys, { scale = null } = {}) {
  const lam = scaleValue(scale);
  floating("query", query);
  return scoreDot(query, keys, lam ?? defaultScale(query.shape.at(-1)));
}

/** The weights and the log-sum-exp of masked scores: [weights, lse]. */
function distribution(scores, mask) {
  floating("scores", scores);
  if (scores.shape.length < 2) throw new ShapeError(`scores must have rank >= 2; got ${scores.shape}`);
  if (scores.shape.at(-1) < 1) throw new ShapeError("scores.shape[-1] must be at least 1");
  const m = maskParts(mask, scores.shape);
  const tk = m.shape.at(-1);
  const out = zeros(m.shape);
  const lse = zeros(m.shape.slice(0, -1));
  let n = 0;
  for (const row of indices(m.shape.slice(0, -1))) {
    const logits = [];
    for (let j = 0; j < tk; j++) {
      const index = [...row, j];
      const e = scores.data[offset(scores.shape, index)];
      if (!m.allowed(index) || e === -Infinity) {
        logits.push(null); // not read: NaN here changes nothing
        continue;
      }
      if (!Number.isFinite(e)) throw new NonFiniteInputError(`scores hold ${e} at an allowed key`);
      logits.push(e / 2 + m.bias(index) / 2);
    }
    const normalized = softmaxRow(logits);
    out.data.set(normalized.weights, offset(m.shape, [...row, 0]));
    lse.data[n++] = normalized.lse;
  }
  return [out, lse];
}

export function attentionDistribution(scores, { mask = null } = {}) {
  return distribution(scores, mask)[0];
}

export function logSumExp(scores, { mask = null } = {}) {
  return distribution(scores, mask)[1];
}

export function attentionValue(weights, values) {
  floating("weights", weights);
  if (weights.shape.length < 2) throw new ShapeError("weights must have rank >= 2");
  sequence("values", values);
  const [tq, tk, dv] = [weights.shape.at(-2), weights.shape.at(-1), values.shape.at(-1)];
  sameSize("values.shape[-2]", values.shape.at(-2), "weights.shape[-1]", tk);
  if (tk < 1) throw new ShapeError("weights.shape[-1] must be at least 1");
  const batch = broadcastShapes(weights.shape.slice(0, -2), values.shape.slice(0, -2));
  checkFinite("weights", weights);
  const out = zeros([...batch, tq, dv]);
  for (const b of indices(batch)) {
    // value.zero-weight-unread: a value row with zero weight in every query row is not read.
    const read = [];
    for (let j = 0; j < tk; j++) {
      let any = false;
      for (let i = 0; i < tq; i++) any ||= weights.data[offset(weights.shape, [...b, i, j])] !== 0;
      if (any) read.push(j);
    }
    for (const j of read) {
      for (let c = 0; c < dv; c++) {
        const v = values.data[offset(values.shape, [...b, j, c])];
        if (!Number.isFinite(v)) throw new NonFiniteInputError(`values hold ${v} in a read row`);
      }
    }
    for (let i = 0; i < tq; i++) {
      for (let c = 0; c < dv; c++) {
        let sum = 0;
        for (const j of read) {
          sum += weights.data[offset(weights.shape, [...b, i, j])] * values.data[offset(values.shape, [...b, j, c])];
        }
        out.data[offset(out.shape, [...b, i, c])] = sum;
      }
    }
  }
  return out;
}

/**
 * Context, weights and log-sum-exp reading only what the combined mask allows.
 * `sinks` holds one logit per head (the last batch axis), or is null.
 */
function attend(query, key, value, mask, scale, causal, sinks = null) {
  const [tq, tk, d, dv] = [query.shape.at(-2), key.shape.at(-2), query.shape.at(-1), value.shape.at(-1)];
  const batch = broadcastShapes(query.shape.slice(0, -2), key.shape.slice(0, -2), value.shape.slice(0, -2));
  const m = maskParts(mask, [...batch, tq, tk]);
  const full = m.shape.slice(0, -2);
  const allowed = (b, i, j) => m.allowed([...b, i, j]) && (causal === null || j <= i + causal);
  // input.unread-positions: only query rows, keys and values that some allowed pair uses are read.
  const readQ = new Uint8Array(query.data.length);
  const readK = new Uint8Array(key.data.length);
  const readV = new Uint8Array(value.data.length);
  for (const b of indices(full)) {
    for (let i = 0; i < tq; i++) {
      for (let j = 0; j < tk; j++) {
        if (!allowed(b, i, j)) continue;
        for (let c = 0; c < d; c++) readQ[offset(query.shape, [...b, i, c])] = 1;
        for (let c = 0; c < d; c++) readK[offset(key.shape, [...b, j, c])] = 1;
        for (let c = 0; c < dv; c++) readV[offset(value.shape, [...b, j, c])] = 1;
      }
    }
  }
  checkFinite("query", query, readQ);
  checkFinite("key", key, readK);
  checkFinite("value", value, readV);
  const weights = zeros([...full, tq, tk]);
  const context = zeros([...full, tq, dv]);
  const lse = zeros([...full, tq]);
  for (const b of indices(full)) {
    const sinkHalf = sinks === null ? null : sinks.data[offset(sinks.shape, [b.at(-1)])] / 2;
    for (let i = 0; i < tq; i++) {
      const logits = [];
      for (let j = 0; j < tk; j++) {
        if (!allowed(b, i, j)) {
          logits.push(null);
          continue;
        }
        // The scale multiplies the query before the product, as FlashAttention does, so a
        // finite scaled score never overflows on the way (q.k may exceed 1e308).
        let sum = 0;
        for (let c = 0; c < d; c++) {
          const q = query.data[offset(query.shape, [...b, i, c])] * scale;
          sum += q * key.data[offset(key.shape, [...b, j, c])];
        }
        logits.push(sum / 2 + m.bias([...b, i, j]) / 2);
      }
      const { weights: row, lse: rowLse } = softmaxRow(logits, sinkHalf);
      weights.data.set(row, offset(weights.shape, [...b, i, 0]));
      lse.data[offset(lse.shape, [...b, i])] = rowLse;
      for (let c = 0; c < dv; c++) {
        let sum = 0;
        row.forEach((w, j) => {
          if (logits[j] !== null) sum += w * value.data[offset(value.shape, [...b, j, c])];
        });
        context.data[offset(context.shape, [...b, i, c])] = sum;
      }
    }
  }
  return [context, weights, lse];
}

const SCORE_PARAMETERS = {
  dot: [],
  scaled_dot: ["scale"],
  general: ["W_a"],
  concat: ["W_a", "v_a"],
  additive: ["W_q", "W_k", "v_a"],
  location: ["W_a"],
};

export function attention(query, keys, values, options = {}) {
  const { score = "dot", mask = null } = options;
  if (!(score in SCORE_PARAMETERS)) throw new ArgumentError(`unknown score ${score}`);
  const takes = SCORE_PARAMETERS[score];
  for (const name of ["scale", "W_a", "W_q", "W_k", "v_a"]) {
    const given = options[name] !== undefined && options[name] !== null;
    if (given && !takes.includes(name)) throw new ArgumentError(`${name} does not belong to ${score}`);
    if (!given && takes.includes(name) && name !== "scale") throw new ArgumentError(`${score} needs ${name}`);
  }
  if (score !== "dot" && score !== "scaled_dot") throw new Unsupported(`score ${score}`);
  const lam = scaleValue(options.scale);
  for (const [name, a] of [["query", query], ["keys", keys], ["values", values]]) sequence(name, a);
  if (keys.shape.at(-2) < 1) throw new ShapeError("keys.shape[-2] must be at least 1");
  sameSize("values.shape[-2]", values.shape.at(-2), "keys.shape[-2]", keys.shape.at(-2));
  sameSize("keys.shape[-1]", keys.shape.at(-1), "query.shape[-1]", query.shape.at(-1));
  const scale = score === "dot" ? 1 : (lam ?? defaultScale(query.shape.at(-1)));
  return attend(query, keys, values, mask, scale, null).slice(0, 2);
}

/** np.repeat(a, group, axis=-3): each head repeated in place (interleaved, not tiled). */
function repeatHeads(a, group) {
  const shape = [...a.shape];
  shape[shape.length - 3] *= group;
  const out = zeros(shape);
  let n = 0;
  for (const index of indices(shape)) {
    const source = [...index];
    source[source.length - 3] = Math.floor(source[source.length - 3] / group);
    out.data[n++] = a.data[offset(a.shape, source)];
  }
  return out;
}

export function scaledDotProductAttention(query, key, value, options = {}) {
  const { mask = null, is_causal = false, causal_alignment = "top_left", enable_gqa = false } = options;
  for (const name of ["softcap", "window", "query_offset", "key_lengths"]) {
    if (options[name] !== undefined && options[name] !== null) throw new Unsupported(name);
  }
  const causal = flag("is_causal", is_causal);
  const grouped = flag("enable_gqa", enable_gqa);
  const withLse = flag("return_lse", options.return_lse ?? false);
  if (causal_alignment !== "top_left" && causal_alignment !== "bottom_right") {
    throw new ArgumentError(`causal_alignment must be top_left or bottom_right; got ${causal_alignment}`);
  }
  const lam = scaleValue(options.scale);
  for (const [name, a] of [["query", query], ["key", key], ["value", value]]) sequence(name, a);
  sameSize("key.shape[-1]", key.shape.at(-1), "query.shape[-1]", query.shape.at(-1));
  if (key.shape.at(-2) < 1) throw new ShapeError("key.shape[-2] must be at least 1");
  sameSize("value.shape[-2]", value.shape.at(-2), "key.shape[-2]", key.shape.at(-2));
  const sinks = options.sinks ?? null;
  if (sinks !== null) {
    // sdpa.arguments: one finite real logit per query head, the heads axis -3.
    if (query.shape.length < 3) throw new ShapeError("sinks need a query [..., H, Tq, d]");
    floating("sinks", sinks);
    if (sinks.shape.length !== 1) throw new ShapeError(`sinks must be [H]; got shape ${sinks.shape}`);
    sameSize("sinks.shape[0]", sinks.shape[0], "query.shape[-3]", query.shape.at(-3));
    checkFinite("sinks", sinks);
  }
  let [k, v] = [key, value];
  if (grouped) {
    for (const a of [query, key, value]) {
      if (a.shape.length < 3) throw new ShapeError("enable_gqa needs [..., H, T, d] arrays");
    }
    const [hq, hk] = [query.shape.at(-3), key.shape.at(-3)];
    sameSize("value.shape[-3]", value.shape.at(-3), "key.shape[-3]", hk);
    if (hq % hk !== 0) throw new ShapeError(`query heads ${hq} are not a multiple of key heads ${hk}`);
    [k, v] = [repeatHeads(key, hq / hk), repeatHeads(value, hq / hk)];
  }
  const [tq, tk] = [query.shape.at(-2), key.shape.at(-2)];
  const offsetCausal = !causal ? null : causal_alignment === "top_left" ? 0 : tk - tq;
  const scale = lam ?? defaultScale(query.shape.at(-1));
  const result = attend(query, k, v, mask, scale, offsetCausal, sinks);
  return withLse ? result : result.slice(0, 2);
}

const FUNCTIONS = {
  score_dot: (args) => scoreDot(...args),
  score_scaled_dot: (args, options) => scoreScaledDot(...args, options),
  attention_distribution: (args, options) => attentionDistribution(...args, options),
  log_sum_exp: (args, options) => logSumExp(...args, options),
  attention_value: (args) => attentionValue(...args),
  attention: (args, options) => attention(...args, options),
  scaled_dot_product_attention: (args, options) => scaledDotProductAttention(...args, options),
};

const ERRORS = { ShapeError, DTypeError, NonFiniteInputError, ArgumentError };

// --- checking -----------------------------------------------------------------------------

function tolerance(file) {
  const rule = file.tolerance.float64;
  return { ulps: rule.ulps, eps: parseHexFloat(rule.eps), tiny: parseHexFloat(rule.tiny) };
}

/** Problems of one result against one expected array under the file's float64 rule. */
function compare(got, expected, rule) {
  const want = decodeArray(expected);
  if (JSON.stringify(got.shape) !== JSON.stringify(want.shape)) {
    return [`shape ${JSON.stringify(got.shape)}, expected ${JSON.stringify(want.shape)}`];
  }
  const problems = [];
  want.data.forEach((y, i) => {
    const scale = expected.error_scale[i];
    const x = got.data[i];
    const ok = scale === 0 ? x === y : Math.abs(x - y) <= rule.ulps * rule.eps * scale + rule.tiny;
    if (!ok && problems.length < 3) problems.push(`element ${i}: got ${x}, expected ${y}`);
  });
  return problems;
}

function checkCase(function_, testCase, rule) {
  let args;
  let options;
  try {
    args = Object.values(testCase.inputs).map(decodeValue);
    options = Object.fromEntries(Object.entries(testCase.options).map(([k, v]) => [k, decodeValue(v)]));
    while (args.length > 0 && args.at(-1) === null) args.pop();
  } catch (error) {
    if (error instanceof Unsupported) return { status: "skipped", why: error.message };
    throw error;
  }
  let result;
  try {
    result = FUNCTIONS[function_](args, options);
  } catch (error) {
    if (error instanceof Unsupported) return { status: "skipped", why: error.message };
    if (testCase.raises !== null && error instanceof ERRORS[testCase.raises]) return { status: "passed" };
    return { status: "failed", why: `raised ${error.constructor.name}: ${error.message}` };
  }
  if (testCase.raises !== null) return { status: "failed", why: `did not raise ${testCase.raises}` };
  const outputs = Array.isArray(result) ? result : [result];
  const problems = testCase.outputs.flatMap((expected, n) =>
    compare(outputs[n], expected, rule).map((p) => `output ${n}: ${p}`),
  );
  return problems.length === 0 ? { status: "passed" } : { status: "failed", why: problems.join("; ") };
}

function main() {
  const here = dirname(fileURLToPath(import.meta.url));
  const directory = resolve(process.argv[2] ?? join(here, "..", "..", "..", "spec", "attnspec", "vectors"));
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const name of readdirSync(directory).sort()) {
    const function_ = name.replace(/\.json$/, "");
    if (!(function_ in FUNCTIONS)) continue;
    const file = JSON.parse(readFileSync(join(directory, name), "utf8"));
    const rule = tolerance(file);
    for (const testCase of file.cases) {
      const outcome = checkCase(function_, testCase, rule);
      counts[outcome.status] += 1;
      if (outcome.status === "failed") console.log(`FAIL ${testCase.id}: ${outcome.why}`);
    }
  }
  console.log(`${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
  return counts.failed === 0 && counts.passed > 0 ? 0 : 1;
}

process.exitCode = main();
