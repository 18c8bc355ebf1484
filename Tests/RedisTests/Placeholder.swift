import Testing

@Test func RedisTestsBuilds() { #expect(Bool(true)) }
