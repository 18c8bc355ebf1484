// The JSON module: one small value type over jansson, the only place in the project that calls its C API.
//
// Why jansson: it is a mature, fast, fuzzed C codec shipped by Debian (libjansson-dev) that keeps 64-bit
// integers exact, validates UTF-8, supports `\u0000` in strings and bounds parse depth, so the hot path of the
// worker (envelope → body → arguments, and results back) never goes through Foundation's coders.
//
// Conventions:
// - Parsing accepts any top-level value (`JSON_DECODE_ANY`) and strings with `\u0000` (`JSON_ALLOW_NUL`); input
//   jansson rejects (truncated, invalid UTF-8, lone surrogate escapes, NaN/Infinity, trailing garbage, integers
//   beyond 64 bits, nesting deeper than `JSONValue.maximumDepth`) throws a `JSONError` with jansson's position.
// - Integers stay exact `Int` (64-bit); reals are `Double` and are written with 17 significant digits, so every
//   finite double round-trips bit for bit. Non-finite doubles (NaN, ±infinity) have no JSON spelling: they are
//   written as `null` (Python's `json` would write `NaN`, which jansson and strict parsers reject).
// - Object members keep their order (insertion order, as Python's dicts); `JSONObject` equality is
//   order-sensitive. A duplicate key in parsed text keeps its first position and its last value, like Python.
// - Serialization is compact (`{"a":1,"b":[2,3]}`), UTF-8, not ASCII-escaped, through jansson as well.
// - Stack: converting between jansson's tree and `JSONValue` is iterative, but jansson recurses when it parses and
//   writes, and Swift releases nested values recursively. A value at the depth limit needs under 1 MiB of stack
//   (tested), well inside the 8 MiB Linux gives a thread by default; `serialize()` refuses anything deeper.
// - Kombu's type markers (`{"__type__": …, "__value__": …}`) are read and written by `KombuValue`, and Celery's
//   ISO-8601 timestamps by `CeleryTimestamp`, without Foundation.

// Re-exported so that users of JSONObject get OrderedDictionary's API without importing swift-collections.
@_exported import struct OrderedCollections.OrderedDictionary

/// A JSON object: member names to values, in insertion order.
public typealias JSONObject = OrderedDictionary<String, JSONValue>
