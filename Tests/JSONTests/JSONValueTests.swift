import JSON
import Testing

@Suite("JSONValue")
struct JSONValueTests {
    @Test func literals() {
        let value: JSONValue = ["n": nil, "b": true, "i": 3, "d": 2.5, "s": "x", "a": [1, "two"], "o": ["k": []]]
        let expected = JSONValue.object([
            "n": .null, "b": .bool(true), "i": .int(3), "d": .double(2.5), "s": .string("x"),
            "a": .array([.int(1), .string("two")]), "o": .object(["k": .array([])]),
        ])
        #expect(value == expected)
    }

    @Test func repeatedLiteralKeyKeepsFirstPlaceAndLastValue() {
        let value: JSONValue = ["a": 1, "b": 2, "a": 3]
        #expect(value.serializedString() == #"{"a":3,"b":2}"#)
    }

    @Test func accessors() {
        let value: JSONValue = ["n": nil, "b": false, "i": 7, "d": 2.5, "w": 4.0, "s": "x", "a": [10, 20]]
        #expect(value["n"]?.isNull == true)
        #expect(value["b"]?.boolValue == false)
        #expect(value["i"]?.intValue == 7)
        #expect(value["i"]?.doubleValue == 7.0)
        #expect(value["d"]?.doubleValue == 2.5)
        #expect(value["d"]?.intValue == nil)
        #expect(value["w"]?.intValue == 4)
        #expect(value["s"]?.stringValue == "x")
        #expect(value["a"]?.arrayValue == [10, 20])
        #expect(value["a"]?[1] == 20)
        #expect(value.objectValue?.count == 7)
        #expect(value["missing"] == nil)
        #expect(value[0] == nil)
        #expect(value["a"]?[2] == nil)
        #expect(value["a"]?[-1] == nil)
        #expect(value["a"]?["k"] == nil)
        #expect(value["s"]?.intValue == nil)
        #expect(value["i"]?.stringValue == nil)
        #expect(value["b"]?.isNull == false)
        #expect(JSONValue.double(1e19).intValue == nil)
        #expect(JSONValue.double(.nan).intValue == nil)
    }

    @Test func objectEqualityIsOrderSensitive() {
        let ab: JSONValue = ["a": 1, "b": 2]
        let ba: JSONValue = ["b": 2, "a": 1]
        #expect(ab != ba)
        let unordered = { (value: JSONValue) in
            value.objectValue.map { Dictionary(uniqueKeysWithValues: $0.map { ($0.key, $0.value) }) }
        }
        #expect(unordered(ab) == unordered(ba))
    }

    @Test func intAndDoubleAreDistinct() {
        #expect(JSONValue.int(1) != JSONValue.double(1))
        #expect(Set<JSONValue>([1, 1.0, 1]).count == 2)
    }

    @Test func descriptionIsCompactJSON() {
        let value: JSONValue = ["a": [1, 2.5, "x"]]
        #expect("\(value)" == #"{"a":[1,2.5,"x"]}"#)
    }
}
