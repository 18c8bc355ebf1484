import Testing

@Test func CeleryTestsBuilds() { #expect(Bool(true)) }
