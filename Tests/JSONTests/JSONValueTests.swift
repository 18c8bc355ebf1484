import JSON
import Testing

@Suite("JSONValue")
struct JSONValueTests {
    @Test func smoke() throws {
        let value = try JSONValue(parsing: #"{"b":1,"a":[1.5,"x\u0000y",null,true]}"#)
        #expect(value.serializedString() == #"{"b":1,"a":[1.5,"x\u0000y",null,true]}"#)
    }
}
