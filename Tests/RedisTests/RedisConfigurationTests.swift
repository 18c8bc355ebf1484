import Redis
import Testing

@Suite("RedisConfiguration")
struct RedisConfigurationTests {
    @Test func defaults() {
        let configuration = RedisConfiguration()
        #expect(configuration.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(configuration.username == nil)
        #expect(configuration.password == nil)
        #expect(configuration.database == 0)
        #expect(configuration.tls == nil)
        #expect(configuration.connectTimeout == .seconds(5))
        #expect(configuration.commandTimeout == .seconds(30))
        #expect(configuration.clientName == nil)
        #expect(configuration.description == "redis://127.0.0.1:6379/0")
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var url: String
        var endpoint: RedisConfiguration.Endpoint
        var username: String? = nil
        var password: String? = nil
        var database = 0
        var testDescription: String { url }
    }

    static let plainCases: [Case] = [
        Case(url: "redis://localhost", endpoint: .tcp(host: "localhost", port: 6379)),
        Case(url: "redis://localhost/", endpoint: .tcp(host: "localhost", port: 6379)),
        Case(url: "redis://localhost:", endpoint: .tcp(host: "localhost", port: 6379)),
        Case(url: "redis://LocalHost:6380/3", endpoint: .tcp(host: "localhost", port: 6380), database: 3),
        Case(url: "redis://10.0.0.5:7000/15", endpoint: .tcp(host: "10.0.0.5", port: 7000), database: 15),
        Case(url: "redis://redis/2/", endpoint: .tcp(host: "redis", port: 6379), database: 2),
        Case(
            url: "redis://:secret@redis:6379/0",
            endpoint: .tcp(host: "redis", port: 6379),
            password: "secret"
        ),
        Case(
            url: "redis://worker:secret@redis/1",
            endpoint: .tcp(host: "redis", port: 6379),
            username: "worker",
            password: "secret",
            database: 1
        ),
        Case(url: "redis://worker@redis", endpoint: .tcp(host: "redis", port: 6379), username: "worker"),
        Case(url: "redis://:@redis", endpoint: .tcp(host: "redis", port: 6379)),
        // Percent-encoded user and password.
        Case(
            url: "redis://us%3Aer:p%40ss%3Aw%2Frd%25@redis/0",
            endpoint: .tcp(host: "redis", port: 6379),
            username: "us:er",
            password: "p@ss:w/rd%"
        ),
        // Python's urlsplit ends the user information at the last "@", and the user at the first ":".
        Case(
            url: "redis://:p@ss:w@redis:6379",
            endpoint: .tcp(host: "redis", port: 6379),
            password: "p@ss:w"
        ),
        // Malformed escapes stay as written; UTF-8 escapes decode.
        Case(url: "redis://:100%@redis", endpoint: .tcp(host: "redis", port: 6379), password: "100%"),
        Case(url: "redis://:%C3%A9t%C3%A9@redis", endpoint: .tcp(host: "redis", port: 6379), password: "été"),
        // IPv6.
        Case(url: "redis://[::1]:6380/4", endpoint: .tcp(host: "::1", port: 6380), database: 4),
        Case(url: "redis://[::1]", endpoint: .tcp(host: "::1", port: 6379)),
        Case(
            url: "redis://:p%40ss@[2001:DB8::2]:7001",
            endpoint: .tcp(host: "2001:db8::2", port: 7001),
            password: "p@ss"
        ),
        // Query parameters: db wins over the path; the authority wins over the query.
        Case(url: "redis://redis/1?db=5", endpoint: .tcp(host: "redis", port: 6379), database: 5),
        Case(url: "redis://redis/notadb?db=5", endpoint: .tcp(host: "redis", port: 6379), database: 5),
        Case(url: "redis://redis/1?db=", endpoint: .tcp(host: "redis", port: 6379), database: 1),
        Case(
            url: "redis://redis?password=q%40ss&username=u+1",
            endpoint: .tcp(host: "redis", port: 6379),
            username: "u 1",
            password: "q@ss"
        ),
        Case(
            url: "redis://a:fromauthority@redis?password=fromquery&username=b",
            endpoint: .tcp(host: "redis", port: 6379),
            username: "a",
            password: "fromauthority"
        ),
        Case(
            url: "redis://redis?password=first&password=second",
            endpoint: .tcp(host: "redis", port: 6379),
            password: "first"
        ),
        // Unknown parameters (Celery transport options) and fragments are ignored.
        Case(
            url: "redis://redis:6379/0?visibility_timeout=3600&health_check_interval=10&flag#fragment",
            endpoint: .tcp(host: "redis", port: 6379)
        ),
        // Unix sockets.
        Case(url: "unix:///run/redis/redis.sock", endpoint: .unix(path: "/run/redis/redis.sock")),
        Case(
            url: "unix:///tmp/redis%20dir/redis.sock?db=3&password=s%26cret",
            endpoint: .unix(path: "/tmp/redis dir/redis.sock"),
            password: "s&cret",
            database: 3
        ),
        Case(
            url: "unix://user:pw@/var/run/redis.sock",
            endpoint: .unix(path: "/var/run/redis.sock"),
            username: "user",
            password: "pw"
        ),
    ]

    @Test(arguments: plainCases)
    func parses(_ expected: Case) throws {
        let configuration = try RedisConfiguration(url: expected.url)
        #expect(configuration.endpoint == expected.endpoint)
        #expect(configuration.username == expected.username)
        #expect(configuration.password == expected.password)
        #expect(configuration.database == expected.database)
        #expect(configuration.tls == nil)
    }

    @Test func rediss() throws {
        let configuration = try RedisConfiguration(url: "rediss://:pw@cache.example.com:6380/2")
        #expect(configuration.endpoint == .tcp(host: "cache.example.com", port: 6380))
        #expect(configuration.database == 2)
        let tls = try #require(configuration.tls)
        #expect(tls.verification == .required)
        #expect(tls.checkHostname)
        // No name of its own: the endpoint's host is the name checked.
        #expect(tls.serverName == nil)
        #expect(tls.caFile == nil)
        #expect(tls.certificateFile == nil)
        #expect(tls.keyFile == nil)
    }

    @Test func tlsParameters() throws {
        let configuration = try RedisConfiguration(
            url: "rediss://localhost:6390/0?ssl_cert_reqs=optional&ssl_ca_certs=/etc/ssl/ca.pem"
                + "&ssl_certfile=/etc/ssl/client.pem&ssl_keyfile=/etc/ssl/client.key&ssl_check_hostname=false"
        )
        let tls = try #require(configuration.tls)
        #expect(tls.verification == .optional)
        #expect(tls.caFile == "/etc/ssl/ca.pem")
        #expect(tls.certificateFile == "/etc/ssl/client.pem")
        #expect(tls.keyFile == "/etc/ssl/client.key")
        #expect(!tls.checkHostname)
    }

    @Test(
        arguments: [
            ("required", RedisConfiguration.TLS.Verification.required),
            ("optional", .optional),
            ("none", .none),
            ("CERT_REQUIRED", .required),
            ("CERT_OPTIONAL", .optional),
            ("CERT_NONE", .none),
        ]
    )
    func certificateRequirements(_ value: String, _ verification: RedisConfiguration.TLS.Verification) throws {
        let configuration = try RedisConfiguration(url: "rediss://redis?ssl_cert_reqs=\(value)")
        #expect(configuration.tls?.verification == verification)
    }

    @Test(arguments: [("true", true), ("1", true), ("yes", true), ("false", false), ("0", false), ("No", false)])
    func checkHostname(_ value: String, _ expected: Bool) throws {
        let configuration = try RedisConfiguration(url: "rediss://redis?ssl_check_hostname=\(value)")
        #expect(configuration.tls?.checkHostname == expected)
    }

    @Test func tlsParametersOnPlainURLAreIgnored() throws {
        let configuration = try RedisConfiguration(url: "redis://redis?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
        #expect(configuration.tls == nil)
    }

    @Test func timeoutsAndClientName() throws {
        let configuration = try RedisConfiguration(
            url: "redis://redis?socket_timeout=2.5&socket_connect_timeout=1&client_name=swift-celery%20w1"
        )
        #expect(configuration.commandTimeout == .milliseconds(2500))
        #expect(configuration.connectTimeout == .seconds(1))
        #expect(configuration.clientName == "swift-celery w1")
    }

    static let invalidURLs: [String] = [
        "",
        "localhost:6379",
        "http://localhost",
        "REDIS://localhost",
        "redis+socket:///tmp/redis.sock",
        "redis://",
        "redis:///0",
        "redis://:pw@/0",
        "redis://redis:abc",
        "redis://redis:0",
        "redis://redis:65536",
        "redis://redis:-1",
        "redis://redis/abc",
        "redis://redis/-1",
        "redis://redis?db=abc",
        "redis://redis?socket_timeout=soon",
        "redis://redis?socket_connect_timeout=-1",
        "rediss://redis?ssl_cert_reqs=sometimes",
        "redis://[::1",
        "redis://[]:6379",
        "unix://",
        "unix://?db=1",
    ]

    @Test(arguments: invalidURLs)
    func rejects(_ url: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidURL)
    }

    /// URLs that are invalid and carry a password, including one where an unencoded "/" splits the password
    /// so that part of it lands in the port and part in the path.
    static let invalidURLsWithPassword: [String] = [
        "redis://:hunter2secret@redis/notadb",
        "redis://user:hunter2secret@redis:99999/0",
        "redis://:hunter2secret@/0",
        "redis://user:hunter2/secret@redis/0",
        "redis://:hunter2secret@redis?db=x",
        "hunter2secret",
        "hunter2secret://redis",
        "rediss://:hunter2secret@redis?ssl_cert_reqs=hunter2secret",
    ]

    @Test(arguments: invalidURLsWithPassword)
    func errorsNeverContainThePassword(_ url: String) {
        do {
            _ = try RedisConfiguration(url: url)
            Issue.record("expected \(url.count)-character URL to be rejected")
        } catch {
            #expect(error.code == .invalidURL)
            #expect(!error.description.contains("hunter2"))
            #expect(!error.message.contains("secret"))
        }
    }

    @Test(
        arguments: [
            ("redis://:hunter2@redis:6380/1", "redis://:***@redis:6380/1"),
            ("redis://worker:hunter2@redis", "redis://worker:***@redis:6379/0"),
            ("redis://worker@redis", "redis://worker@redis:6379/0"),
            ("redis://redis?password=hunter2", "redis://:***@redis:6379/0"),
            ("redis://:hunter2@[::1]:6380", "redis://:***@[::1]:6380/0"),
            ("unix://:hunter2@/tmp/redis.sock?db=2", "unix://:***@/tmp/redis.sock?db=2"),
            ("rediss://:hunter2@redis", "rediss://:***@redis:6379/0"),
            (
                "rediss://redis?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=/ca.pem&socket_timeout=1.5&client_name=w",
                "rediss://redis:6379/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem&socket_timeout=1.5&client_name=w"
            ),
        ]
    )
    func redaction(_ url: String, _ redacted: String) throws {
        let configuration = try RedisConfiguration(url: url)
        #expect(configuration.redactedURL == redacted)
        #expect(configuration.description == redacted)
        #expect(!configuration.description.contains("hunter2"))
        #expect(!"\(configuration)".contains("hunter2"))
        // The redacted URL parses back to the same configuration, less the password.
        var reparsed = try RedisConfiguration(url: redacted)
        reparsed.password = configuration.password
        #expect(reparsed == configuration)
    }

    @Test func defaultPassword() throws {
        let withoutPassword = try RedisConfiguration(url: "redis://redis")
        #expect(withoutPassword.withDefaultPassword("fromenv").password == "fromenv")
        #expect(withoutPassword.withDefaultPassword(nil).password == nil)
        #expect(withoutPassword.withDefaultPassword("").password == nil)
        let withPassword = try RedisConfiguration(url: "redis://:fromurl@redis")
        #expect(withPassword.withDefaultPassword("fromenv").password == "fromurl")
    }

    @Test func memberwiseConfigurationDescribesItself() {
        var configuration = RedisConfiguration(
            endpoint: .tcp(host: "redis", port: 6390),
            username: "u",
            password: "hunter2",
            database: 3,
            tls: .init(verification: .required, caFile: "/ca.pem")
        )
        configuration.connectTimeout = .milliseconds(250)
        #expect(
            configuration.description == "rediss://u:***@redis:6390/3?ssl_ca_certs=/ca.pem&socket_connect_timeout=0.25"
        )
    }
}
