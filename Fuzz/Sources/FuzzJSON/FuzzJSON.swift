import FuzzDriver
import JSON

// libFuzzer entry point for the JSON layer: the input is JSON text from Redis (an envelope, a body, a result).
//
// Checks, beyond "no crash": whatever parses serializes, and the serialized text parses back to an equal value;
// every kombu type marker converts back to the same marker; timestamps in strings either parse or are refused.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let value = try? JSONValue(parsing: input) else { return 0 }
    let text: [UInt8]
    do {
        text = try value.serialize()
    } catch {
        preconditionFailure("a parsed value does not serialize: \(error)")
    }
    guard let again = try? JSONValue(parsing: text) else {
        preconditionFailure("serialized text does not parse: \(String(decoding: text, as: UTF8.self))")
    }
    precondition(again == value, "a parse → serialize → parse round trip changed the value")
    _ = value.hashValue

    // Every node, without recursion (the input may nest up to JSONValue.maximumDepth).
    var pending = [value]
    while let node = pending.popLast() {
        switch node {
        case .array(let elements):
            pending.append(contentsOf: elements)
        case .object(let members):
            if let marker = node.kombuValue {
                precondition(JSONValue(kombu: marker).kombuValue == marker, "a kombu marker does not round-trip")
            }
            pending.append(contentsOf: members.values)
        case .string(let string):
            if let timestamp = CeleryTimestamp(iso8601: string) {
                _ = timestamp.iso8601
            }
        default:
            break
        }
    }
    return 0
}

/// SwiftPM links `main` to `FuzzJSON_main`; hand control to libFuzzer from there.
@_cdecl("FuzzJSON_main")
public func fuzzJSONMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzJSON(data, size) }
}
