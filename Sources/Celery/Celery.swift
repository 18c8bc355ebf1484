// What a team's task code uses with the handler API, in one import: the wire values (`PythonException`,
// `TaskState`, `Signature`) and `JSONValue`.
@_exported import CeleryProtocol
@_exported import JSON
