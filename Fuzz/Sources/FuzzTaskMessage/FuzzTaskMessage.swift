import ExtrasBase64
import FuzzDriver
import JSON

// libFuzzer entry point for the Celery message decoder (`TaskMessage(envelope:)`, the same source file the worker
// uses) and the argument decoding a handler sees.
//
// The first byte picks where the fuzzed bytes go, so the decoder is reached beyond the envelope's JSON check:
//   0: the whole list element (the envelope as popped from Redis)
//   1: the body, base64-encoded into an otherwise valid envelope
//   2: the body as text (no body_encoding) in an otherwise valid envelope
//   3: the headers object, spliced into an otherwise valid envelope
//   4: the properties object, spliced into an otherwise valid envelope
// Checks, beyond "no crash": a decoded message always has a task name, a task id and a delivery tag; every
// failure carries a message; every derived field (eta, expires, time limit, ...) and every argument conversion
// can be read. And where the decoder cuts a leading base64 body out before jansson parses the rest, the same
// envelope with its body moved last (which is parsed whole) decodes to the same message, or fails the same way.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTaskMessage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    guard let mode = input.first else { return 0 }
    let fuzzed = Array(input.dropFirst())
    let envelope: [UInt8]
    switch mode % 5 {
    case 0: envelope = fuzzed
    case 1: envelope = splice(body: .string(Base64.encodeToString(bytes: fuzzed)), encoding: "base64")
    case 2: envelope = splice(body: .string(String(decoding: fuzzed, as: UTF8.self)), encoding: nil)
    case 3: envelope = splice(headers: fuzzed)
    default: envelope = splice(properties: fuzzed)
    }
    let outcome = decode(envelope)
    if TaskMessage.leadingBodyText(in: envelope) != nil, var object = (try? JSONValue(parsing: envelope))?.objectValue,
        object.count > 1, let body = object.removeValue(forKey: "body")
    {
        object["body"] = body
        if let last = try? JSONValue.object(object).serialize() {
            precondition(TaskMessage.leadingBodyText(in: last) == nil, "the body is still first")
            let again = decode(last)
            precondition(again == outcome, "moving the body last changed the outcome: \(outcome) against \(again)")
        }
    }
    return 0
}

/// What decoding gave, to compare two decodings.
private enum Outcome: Equatable {
    case decoded(
        name: String,
        id: String,
        tag: String,
        version: Int,
        headers: JSONObject,
        args: [JSONValue],
        kwargs: JSONObject,
        embed: JSONObject
    )
    case failed(TaskMessageError.Code, taskID: String?)
}

private func decode(_ envelope: [UInt8]) -> Outcome {
    do {
        let message = try TaskMessage(envelope: envelope)
        precondition(!message.taskName.isEmpty, "a decoded message without a task name")
        precondition(!message.id.isEmpty, "a decoded message without a task id")
        precondition(!message.deliveryTag.isEmpty, "a decoded message without a delivery tag")
        precondition(message.protocolVersion == 1 || message.protocolVersion == 2)
        _ = (message.retries, message.eta?.iso8601, message.expires?.iso8601, message.groupID)
        _ = (message.parentID, message.rootID, message.ignoreResult, message.timeLimit, message.priority)
        for value in message.args + Array(message.kwargs.values) { convert(value) }
        for value in message.embed.values { convert(value) }
        return .decoded(
            name: message.taskName,
            id: message.id,
            tag: message.deliveryTag,
            version: message.protocolVersion,
            headers: message.headers,
            args: message.args,
            kwargs: message.kwargs,
            embed: message.embed
        )
    } catch {
        precondition(!error.description.isEmpty)
        return .failed(error.code, taskID: error.taskID)
    }
}

/// Every conversion a handler's parameter types make.
private func convert(_ value: JSONValue) {
    _ = Int(taskArgument: value)
    _ = Double(taskArgument: value)
    _ = String(taskArgument: value)
    _ = Bool(taskArgument: value)
    _ = [Int](taskArgument: value)
    _ = [String: Double](taskArgument: value)
    _ = [[String]?](taskArgument: value)
    _ = Int?(taskArgument: value)
    _ = pythonTypeName(of: value)
}

private let validBody = Array(
    #"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#.utf8
)
private let validHeaders = Array(
    #"{"lang": "py", "task": "tasks.add", "id": "3f1c", "eta": null, "retries": 0, "timelimit": [null, null]}"#.utf8
)
private let validProperties = Array(
    #"{"correlation_id": "3f1c", "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "9d2e"}"#
        .utf8
)

private func splice(body: JSONValue, encoding: String?) -> [UInt8] {
    var properties = (try? JSONValue(parsing: validProperties).objectValue) ?? [:]
    properties["body_encoding"] = encoding.map { .string($0) } ?? nil
    let object: JSONObject = [
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": (try? JSONValue(parsing: validHeaders)) ?? .null,
        "properties": .object(properties),
    ]
    return JSONValue.object(object).serialized()
}

private func splice(headers: [UInt8] = validHeaders, properties: [UInt8] = validProperties) -> [UInt8] {
    let body = Base64.encodeToString(bytes: validBody)
    return Array(
        #"{"body": "\#(body)", "content-encoding": "utf-8", "content-type": "application/json", "headers": "#.utf8
    )
        + headers + Array(#", "properties": "#.utf8) + properties + Array("}".utf8)
}

/// SwiftPM links `main` to `FuzzTaskMessage_main`; hand control to libFuzzer from there.
@_cdecl("FuzzTaskMessage_main")
public func fuzzTaskMessageMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzTaskMessage(data, size) }
}
