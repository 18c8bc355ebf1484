import Testing

@Test func RESPTestsBuilds() { #expect(Bool(true)) }
