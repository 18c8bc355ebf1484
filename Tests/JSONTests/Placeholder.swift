import Testing

@Test func JSONTestsBuilds() { #expect(Bool(true)) }
