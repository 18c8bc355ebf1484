import Redis
import Testing

@Suite("RedisConfiguration: Sentinel URLs")
struct RedisConfigurationSentinelTests {
    typealias Sentinel = RedisConfiguration.Sentinel

    @Test func kombuForm() throws {
        let configuration = try RedisConfiguration(
            url: "sentinel://:pw@host1:26379/2;sentinel://host2:26380/2;sentinel://[::1]?master_name=mymaster"
        )
        let sentinel = try #require(configuration.sentinel)
        #expect(
            sentinel.sentinels == [
                Sentinel.Address(host: "host1", port: 26379), Sentinel.Address(host: "host2", port: 26380),
                Sentinel.Address(host: "::1", port: 26379),
            ]
        )
        #expect(sentinel.masterName == "mymaster")
        #expect(sentinel.password == nil)
        // The URL's password and database are the master's, as in kombu.
        #expect(configuration.password == "pw")
        #expect(configuration.database == 2)
        #expect(configuration.tls == nil)
    }

    @Test func oneSentinelWithDefaults() throws {
        let configuration = try RedisConfiguration(url: "sentinel://sentinel.internal")
        #expect(configuration.endpoint == .sentinel(Sentinel(sentinels: [.init(host: "sentinel.internal")])))
        #expect(configuration.sentinel?.masterName == nil)
        #expect(configuration.password == nil)
        #expect(configuration.database == 0)
    }

    @Test func credentialsForTheSentinelsAndTheMaster() throws {
        let configuration = try RedisConfiguration(
            url: "sentinel://worker:master%40pw@h1:1/0;sentinel://other:ignored@h2:2/5"
                + "?master_name=m&sentinel_username=sentinel-user&sentinel_password=s%20pw"
        )
        let sentinel = try #require(configuration.sentinel)
        #expect(sentinel.username == "sentinel-user")
        #expect(sentinel.password == "s pw")
        // The first URL that has them wins.
        #expect(configuration.username == "worker")
        #expect(configuration.password == "master@pw")
        #expect(configuration.database == 0)
    }

    @Test(arguments: [
        ("sentinel://h:1?master_name=m&ssl=true", true),
        ("sentinel://h:1?master_name=m&ssl_ca_certs=/ca.pem", true),
        ("sentinel://h:1?master_name=m&ssl_cert_reqs=none", true),
        ("sentinel://h:1?master_name=m&ssl=false", false),
        ("sentinel://h:1?master_name=m", false),
    ])
    func tls(_ url: String, _ enabled: Bool) throws {
        let configuration = try RedisConfiguration(url: url)
        #expect((configuration.tls != nil) == enabled)
    }

    @Test func tlsSettings() throws {
        let configuration = try RedisConfiguration(
            url: "sentinel://h:1?master_name=m&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/c.key"
                + "&ssl_check_hostname=false&socket_connect_timeout=2"
        )
        let tls = try #require(configuration.tls)
        #expect(tls.verification == .required)
        #expect(tls.caFile == "/ca.pem")
        #expect(tls.certificateFile == "/c.pem")
        #expect(tls.keyFile == "/c.key")
        #expect(!tls.checkHostname)
        #expect(configuration.connectTimeout == .seconds(2))
    }

    @Test(arguments: [
        "sentinel://",
        "sentinel://:pw@/0",
        "sentinel://h:0",
        "sentinel://h:99999",
        "sentinel://h/abc",
        "sentinel://h:1;redis://h:2",
        ";",
        "sentinel://h?master_name=m&ssl_cert_reqs=sometimes",
    ])
    func invalid(_ url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }

    @Test func redactedURLHidesBothPasswordsAndParsesBack() throws {
        let configuration = try RedisConfiguration(
            url: "sentinel://:hunter2@h1:1/3;sentinel://h2:2/3?master_name=m&sentinel_password=sesame&ssl=true"
        )
        let redacted = configuration.redactedURL
        #expect(!redacted.contains("hunter2"))
        #expect(!redacted.contains("sesame"))
        #expect(redacted == "sentinel://:***@h1:1/3;sentinel://h2:2/3?master_name=m&sentinel_password=***&ssl=true")
        var reparsed = try RedisConfiguration(url: redacted)
        reparsed.password = configuration.password
        reparsed.sentinel?.password = configuration.sentinel?.password
        #expect(reparsed == configuration)
    }

    @Test func defaultsFromTheEnvironmentApplyOnlyWhenMissing() throws {
        let bare = try RedisConfiguration(url: "sentinel://h:1")
        #expect(bare.withDefaultMasterName("env").sentinel?.masterName == "env")
        #expect(bare.withDefaultMasterName("").sentinel?.masterName == nil)
        #expect(bare.withDefaultSentinelPassword("env").sentinel?.password == "env")
        let named = try RedisConfiguration(url: "sentinel://h:1?master_name=url&sentinel_password=url")
        #expect(named.withDefaultMasterName("env").sentinel?.masterName == "url")
        #expect(named.withDefaultSentinelPassword("env").sentinel?.password == "url")
        let plain = try RedisConfiguration(url: "redis://h:1")
        #expect(plain.withDefaultMasterName("env") == plain)
        #expect(plain.withDefaultSentinelPassword("env") == plain)
    }
}
