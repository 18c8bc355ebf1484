/// Where and how to reach a Redis server: address, credentials, database, TLS and timeouts.
///
/// Build it in code, or parse the URL a Celery or redis-py user already has with ``init(url:)``.
/// ``description`` and ``redactedURL`` never contain the password.
public struct RedisConfiguration: Sendable, Hashable {
    /// The address of a Redis server.
    public enum Endpoint: Sendable, Hashable {
        /// A host name or IP literal (IPv6 without brackets) and a TCP port.
        case tcp(host: String, port: Int)
        /// The path of a Unix domain socket.
        case unix(path: String)
        /// The master that Redis Sentinel names, found when each connection is made.
        case sentinel(Sentinel)
    }

    /// TLS settings; a configuration whose `tls` is `nil` connects in plain text.
    public struct TLS: Sendable, Hashable {
        /// How the server's certificate is checked (redis-py's `ssl_cert_reqs`).
        public enum Verification: Sendable, Hashable {
            /// The server must present a certificate that chains to a trusted CA (`required`, `CERT_REQUIRED`).
            case required
            /// A certificate, if the server presents one, must verify (`optional`, `CERT_OPTIONAL`).
            case optional
            /// The certificate is not checked at all (`none`, `CERT_NONE`).
            case none
        }

        /// How the server's certificate is checked; default `.required`.
        public var verification: Verification
        /// PEM file of the CA certificates to trust (`ssl_ca_certs`); `nil` trusts the system's roots.
        public var caFile: String?
        /// PEM file of the client certificate (`ssl_certfile`), for servers that ask for one.
        public var certificateFile: String?
        /// PEM file of the client certificate's private key (`ssl_keyfile`).
        public var keyFile: String?
        /// The name sent as SNI and checked against the certificate; `nil` means the endpoint's host.
        ///
        /// An IP literal is never sent as SNI (TLS forbids it); the certificate must then list the address the
        /// connection reached as an IP subjectAltName.
        public var serverName: String?
        /// Whether the certificate must name the server (`ssl_check_hostname`); only applies when verifying.
        public var checkHostname: Bool

        /// Creates TLS settings; the defaults verify the server against the system's roots and its host name.
        public init(
            verification: Verification = .required,
            caFile: String? = nil,
            certificateFile: String? = nil,
            keyFile: String? = nil,
            serverName: String? = nil,
            checkHostname: Bool = true
        ) {
            self.verification = verification
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.serverName = serverName
            self.checkHostname = checkHostname
        }
    }

    /// The default TCP port of Redis.
    public static let defaultPort = 6379
    /// The default time allowed to connect, including TLS and authentication.
    public static let defaultConnectTimeout = Duration.seconds(5)
    /// The default time allowed for a command's reply (blocking commands add their own timeout to it).
    public static let defaultCommandTimeout = Duration.seconds(30)

    /// The server's address; default `127.0.0.1:6379`.
    public var endpoint: Endpoint
    /// The ACL user for `AUTH`/`HELLO`; `nil` means the default user.
    public var username: String?
    /// The password for `AUTH`/`HELLO`; `nil` sends no authentication.
    public var password: String?
    /// The database selected after connecting; default 0.
    public var database: Int
    /// TLS settings; `nil` connects in plain text.
    public var tls: TLS?
    /// Time allowed to open the connection (`socket_connect_timeout`); default 5 seconds.
    public var connectTimeout: Duration
    /// Time allowed for one command's reply (`socket_timeout`); default 30 seconds.
    public var commandTimeout: Duration
    /// The name set with `CLIENT SETNAME` (`client_name`); `nil` sets none.
    public var clientName: String?

    /// Creates a configuration; the defaults reach a local Redis without password, TLS or database selection.
    public init(
        endpoint: Endpoint = .tcp(host: "127.0.0.1", port: RedisConfiguration.defaultPort),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        tls: TLS? = nil
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
        self.connectTimeout = Self.defaultConnectTimeout
        self.commandTimeout = Self.defaultCommandTimeout
        self.clientName = nil
    }

    /// Applies `password` when the configuration has none (the meaning of `REDIS_PASSWORD`).
    ///
    /// A password in the URL wins; `nil` or an empty string changes nothing.
    public func withDefaultPassword(_ password: String?) -> RedisConfiguration {
        guard self.password == nil, let password, !password.isEmpty else { return self }
        var configuration = self
        configuration.password = password
        return configuration
    }
}

// MARK: - URL parsing

extension RedisConfiguration {
    /// Parses a URL as Celery and redis-py users write it.
    ///
    /// Forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS, certificate verification on by
    /// default), `unix:///path/to/redis.sock`, and kombu's Sentinel form, `sentinel://` URLs joined by `;` (with
    /// `master_name`, `sentinel_username`, `sentinel_password` and `ssl` in the query; see ``Sentinel``). User and
    /// password are percent-decoded; IPv6 hosts are written in brackets. Query parameters understood: `db`,
    /// `username`, `password`, `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_check_hostname`,
    /// `socket_timeout`, `socket_connect_timeout`, `client_name`; others are ignored, as Celery users pass transport
    /// options there too.
    ///
    /// Precedence follows redis-py's `parse_url`: a `db` query parameter wins over the path, and a user or
    /// password in the authority wins over the query. Unlike redis-py, and like kombu's Redis transport, a path
    /// that is not a database number is an error rather than silently database 0.
    ///
    /// - Throws: `RedisError` with code `.invalidURL`; its message never contains the password or any other
    ///   piece of the URL that could be part of one.
    public init(url: String) throws(RedisError) {
        if url.hasPrefix("sentinel://") {
            try self.init(sentinelURL: url)
            return
        }
        let parts = try RedisURLParts(url)
        let query = RedisURLParts.queryItems(parts.query)

        self.init()

        switch parts.scheme {
        case .unix:
            let path = RedisURLParts.percentDecoded(parts.path)
            guard !path.isEmpty else {
                throw Self.invalid("a unix:// URL needs the socket's path, as in unix:///run/redis/redis.sock")
            }
            self.endpoint = .unix(path: path)
        case .redis, .rediss, .sentinel:
            let (host, port) = try Self.hostAndPort(
                parts,
                defaultPort: Self.defaultPort,
                noHost: "the URL has no host",
                badPort: "the port is not a number between 1 and 65535"
            )
            self.endpoint = .tcp(host: host, port: port)
            // The path names the database only when the query does not (redis-py's rule).
            if query["db"] == nil {
                let digits = RedisURLParts.percentDecoded(parts.path).filter { $0 != "/" }
                if !digits.isEmpty {
                    guard let database = RedisURLParts.decimal(digits) else {
                        throw Self.invalid("the path is not a database number")
                    }
                    self.database = database
                }
            }
            if parts.scheme == .rediss {
                // No server name: the endpoint's host is checked, and an IP host goes without SNI.
                self.tls = TLS()
            }
        }

        if let value = query["db"] {
            guard let database = RedisURLParts.decimal(value) else { throw Self.invalidQuery("db") }
            self.database = database
        }
        self.username = query["username"]
        self.password = query["password"]
        // A user or password in the authority wins over the query; empty ones count as absent (as in redis-py).
        if let username = parts.username.map(RedisURLParts.percentDecoded), !username.isEmpty {
            self.username = username
        }
        if let password = parts.password.map(RedisURLParts.percentDecoded), !password.isEmpty {
            self.password = password
        }
        if let value = query["socket_timeout"] {
            self.commandTimeout = try Self.duration(value, parameter: "socket_timeout")
        }
        if let value = query["socket_connect_timeout"] {
            self.connectTimeout = try Self.duration(value, parameter: "socket_connect_timeout")
        }
        self.clientName = query["client_name"]

        // TLS parameters on a plain redis:// or unix:// URL are ignored rather than turning TLS on.
        if let tls = self.tls {
            self.tls = try Self.tls(tls, query: query)
        }
    }

    /// A URL's host (percent-decoded, lowercased) and port (`defaultPort` when it names none).
    static func hostAndPort(
        _ parts: RedisURLParts,
        defaultPort: Int,
        noHost: String,
        badPort: String
    ) throws(RedisError) -> (host: String, port: Int) {
        let host = RedisURLParts.percentDecoded(parts.host).lowercased()
        guard !host.isEmpty else { throw Self.invalid(noHost) }
        guard !parts.port.isEmpty else { return (host, defaultPort) }
        guard let number = RedisURLParts.decimal(parts.port), (1...65535).contains(number) else {
            throw Self.invalid(badPort)
        }
        return (host, number)
    }

    /// `tls` with redis-py's `ssl_*` query parameters applied.
    static func tls(_ tls: TLS, query: [String: String]) throws(RedisError) -> TLS {
        var tls = tls
        if let value = query["ssl_cert_reqs"] {
            guard let verification = Self.verification(value) else { throw Self.invalidQuery("ssl_cert_reqs") }
            tls.verification = verification
        }
        tls.caFile = query["ssl_ca_certs"]
        tls.certificateFile = query["ssl_certfile"]
        tls.keyFile = query["ssl_keyfile"]
        if let value = query["ssl_check_hostname"] {
            tls.checkHostname = RedisURLParts.bool(value)
        }
        return tls
    }

    static func invalid(_ message: String) -> RedisError {
        RedisError(.invalidURL, "invalid Redis URL: \(message)")
    }

    static func invalidQuery(_ parameter: String) -> RedisError {
        invalid("invalid value for '\(parameter)'")
    }

    static func verification(_ value: String) -> TLS.Verification? {
        switch value.lowercased() {
        case "required", "cert_required": return .required
        case "optional", "cert_optional": return .optional
        case "none", "cert_none": return TLS.Verification.none
        default: return nil
        }
    }

    static func duration(_ value: String, parameter: String) throws(RedisError) -> Duration {
        guard let seconds = Double(value), seconds.isFinite, seconds > 0, seconds < 1e9 else {
            throw invalidQuery(parameter)
        }
        return .milliseconds((seconds * 1000).rounded(.up))
    }
}

// MARK: - Redaction

extension RedisConfiguration: CustomStringConvertible {
    /// The configuration as a URL with the password replaced by `***`, safe to log.
    ///
    /// Parsing it again gives the same configuration except for the password.
    public var redactedURL: String {
        var url: String
        switch endpoint {
        case .tcp: url = tls == nil ? "redis://" : "rediss://"
        case .unix: url = "unix://"
        case .sentinel(let sentinel): return redactedSentinelURL(sentinel)
        }
        if username != nil || password != nil {
            url += RedisURLParts.percentEncoded(username ?? "", keeping: "")
            if password != nil {
                url += ":***"
            }
            url += "@"
        }
        var query: [(String, String)] = []
        switch endpoint {
        case .tcp(let host, let port):
            url += host.contains(":") ? "[\(host)]" : RedisURLParts.percentEncoded(host, keeping: ".")
            url += ":\(port)/\(database)"
        case .unix(let path):
            url += RedisURLParts.percentEncoded(path, keeping: "/.")
            if database != 0 {
                query.append(("db", "\(database)"))
            }
        case .sentinel:
            preconditionFailure("handled above")
        }
        if case .tcp = endpoint {
            query += tlsQueryItems()
        }
        query += timeoutAndNameQueryItems()
        return url + Self.renderedQuery(query)
    }

    /// The TLS settings as URL query items (none when TLS is off).
    func tlsQueryItems() -> [(String, String)] {
        var query: [(String, String)] = []
        if let tls {
            switch tls.verification {
            case .required: break
            case .optional: query.append(("ssl_cert_reqs", "optional"))
            case .none: query.append(("ssl_cert_reqs", "none"))
            }
            if let caFile = tls.caFile { query.append(("ssl_ca_certs", caFile)) }
            if let certificateFile = tls.certificateFile { query.append(("ssl_certfile", certificateFile)) }
            if let keyFile = tls.keyFile { query.append(("ssl_keyfile", keyFile)) }
            if !tls.checkHostname { query.append(("ssl_check_hostname", "false")) }
        }
        return query
    }

    func timeoutAndNameQueryItems() -> [(String, String)] {
        var query: [(String, String)] = []
        if connectTimeout != Self.defaultConnectTimeout {
            query.append(("socket_connect_timeout", Self.seconds(connectTimeout)))
        }
        if commandTimeout != Self.defaultCommandTimeout {
            query.append(("socket_timeout", Self.seconds(commandTimeout)))
        }
        if let clientName { query.append(("client_name", clientName)) }
        return query
    }

    static func renderedQuery(_ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return "" }
        // `*` stays as it is, so that a redacted password reads as `***`.
        return "?" + query.map { "\($0)=\(RedisURLParts.percentEncoded($1, keeping: "/.:*"))" }.joined(separator: "&")
    }

    /// The redacted URL; never the password.
    public var description: String { redactedURL }

    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 { return "\(seconds)" }
        return "\(Double(seconds) + Double(attoseconds) / 1e18)"
    }
}

// MARK: - Lexical URL splitting

/// A URL split the way Python's `urllib.parse.urlsplit` splits it, which is what redis-py parses.
struct RedisURLParts {
    enum Scheme { case redis, rediss, unix, sentinel }

    var scheme: Scheme
    var username: String?
    var password: String?
    var host: Substring
    var port: Substring
    var path: Substring
    var query: Substring

    init(_ url: String) throws(RedisError) {
        // Case-sensitive, as redis-py checks the prefix before urlparse lowercases it.
        let rest: Substring
        if url.hasPrefix("redis://") {
            (scheme, rest) = (.redis, url.dropFirst("redis://".count))
        } else if url.hasPrefix("rediss://") {
            (scheme, rest) = (.rediss, url.dropFirst("rediss://".count))
        } else if url.hasPrefix("unix://") {
            (scheme, rest) = (.unix, url.dropFirst("unix://".count))
        } else if url.hasPrefix("sentinel://") {
            (scheme, rest) = (.sentinel, url.dropFirst("sentinel://".count))
        } else {
            // Name the scheme only when it is a well-known one: a malformed URL could start with its password.
            var message = "the scheme must be redis://, rediss://, unix:// or sentinel://"
            let knownSchemes = [
                "amqp", "amqps", "filesystem", "http", "https", "memory", "redis+socket", "socket", "sqs",
                "valkey", "valkeys",
            ]
            if let scheme = url.split(separator: ":", maxSplits: 1).first, url.dropFirst(scheme.count).hasPrefix("://"),
                knownSchemes.contains(scheme.lowercased())
            {
                message += ", not \(scheme)://"
            }
            throw RedisError(.invalidURL, "invalid Redis URL: \(message)")
        }

        // The authority ends at the first "/", "?" or "#"; the fragment goes before the query is split off.
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var remainder = rest[authorityEnd...]
        if let hash = remainder.firstIndex(of: "#") {
            remainder = remainder[..<hash]
        }
        if let question = remainder.firstIndex(of: "?") {
            path = remainder[..<question]
            query = remainder[remainder.index(after: question)...]
        } else {
            path = remainder
            query = ""
        }

        // The last "@" ends the user information, so an unencoded "@" in a password still works (as in Python).
        var hostAndPort = authority
        if let at = authority.lastIndex(of: "@") {
            let userInformation = authority[..<at]
            hostAndPort = authority[authority.index(after: at)...]
            if let colon = userInformation.firstIndex(of: ":") {
                username = String(userInformation[..<colon])
                password = String(userInformation[userInformation.index(after: colon)...])
            } else {
                username = String(userInformation)
                password = nil
            }
        } else {
            username = nil
            password = nil
        }

        if authority.contains("[") != authority.contains("]") {
            throw RedisError(.invalidURL, "invalid Redis URL: unbalanced brackets around an IPv6 address")
        }
        if let open = hostAndPort.firstIndex(of: "[") {
            let bracketed = hostAndPort[hostAndPort.index(after: open)...]
            guard let close = bracketed.firstIndex(of: "]") else {
                throw RedisError(.invalidURL, "invalid Redis URL: unbalanced brackets around an IPv6 address")
            }
            host = bracketed[..<close]
            let afterBracket = bracketed[bracketed.index(after: close)...]
            port = afterBracket.firstIndex(of: ":").map { afterBracket[afterBracket.index(after: $0)...] } ?? ""
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." || $0 == "%" }) else {
                throw RedisError(.invalidURL, "invalid Redis URL: the bracketed host is not an IPv6 address")
            }
        } else if let colon = hostAndPort.firstIndex(of: ":") {
            host = hostAndPort[..<colon]
            port = hostAndPort[hostAndPort.index(after: colon)...]
        } else {
            host = hostAndPort
            port = ""
        }
    }

    /// Query parameters as Python's `parse_qs` reads them: `+` is a space, pairs without `=` or with an empty
    /// value are dropped, and the first value of a repeated name wins.
    static func queryItems(_ query: Substring) -> [String: String] {
        var items: [String: String] = [:]
        for pair in query.split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let name = formDecoded(pair[..<equals])
            let value = formDecoded(pair[pair.index(after: equals)...])
            if !value.isEmpty, items[name] == nil {
                items[name] = value
            }
        }
        return items
    }

    private static func formDecoded(_ text: Substring) -> String {
        percentDecoded(String(text.map { $0 == "+" ? " " : $0 }))
    }

    /// Decodes `%XX` escapes like Python's `unquote`: malformed escapes stay as written, bad UTF-8 becomes U+FFFD.
    static func percentDecoded<S: StringProtocol>(_ text: S) -> String {
        let bytes = Array(text.utf8)
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                decoded.append(high << 4 | low)
                index += 3
            } else {
                decoded.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: decoded, as: UTF8.self)
    }

    /// Percent-encodes everything but ASCII letters, digits, `-`, `_`, `~` and the characters in `keeping`.
    static func percentEncoded(_ text: String, keeping: String) -> String {
        let hexDigits = Array("0123456789ABCDEF".utf8)
        var encoded: [UInt8] = []
        for byte in text.utf8 {
            let character = Character(Unicode.Scalar(byte))
            if byte < 0x80
                && (character.isLetter || character.isNumber || "-_~".contains(character)
                    || keeping.contains(character))
            {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(hexDigits[Int(byte >> 4)])
                encoded.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: encoded, as: UTF8.self)
    }

    /// A non-negative decimal number of ASCII digits only, or `nil`.
    static func decimal<S: StringProtocol>(_ text: S) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 9, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
            return nil
        }
        return Int(text)
    }

    /// redis-py's `to_bool`: `0`, `f`, `false`, `n` and `no` (any case) are false, anything else true.
    static func bool(_ text: String) -> Bool {
        !["0", "F", "FALSE", "N", "NO"].contains(text.uppercased())
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
