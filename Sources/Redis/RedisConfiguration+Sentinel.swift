extension RedisConfiguration {
    /// A master that Redis Sentinel names: which sentinels to ask, the master's name, and the sentinels' own
    /// credentials. Every connection asks the sentinels where the master is, so a failover needs no restart.
    public struct Sentinel: Sendable, Hashable {
        /// The address of one sentinel.
        public struct Address: Sendable, Hashable {
            /// A host name or IP literal (IPv6 without brackets).
            public var host: String
            /// The sentinel's TCP port; default 26379.
            public var port: Int

            /// Creates a sentinel address.
            public init(host: String, port: Int = Sentinel.defaultPort) {
                self.host = host
                self.port = port
            }
        }

        /// The default TCP port of Redis Sentinel.
        public static let defaultPort = 26379

        /// The sentinels, asked in this order until one answers.
        public var sentinels: [Address]
        /// The name the sentinels monitor the master under (kombu's `master_name` transport option); it must be
        /// set before the first connection.
        public var masterName: String?
        /// The ACL user for the sentinels, if they need one (kombu's `sentinel_kwargs`).
        public var username: String?
        /// The sentinels' password (`requirepass` in sentinel.conf), if they need one; the master's password is
        /// the configuration's own.
        public var password: String?

        /// Creates Sentinel settings.
        public init(sentinels: [Address], masterName: String? = nil, username: String? = nil, password: String? = nil) {
            self.sentinels = sentinels
            self.masterName = masterName
            self.username = username
            self.password = password
        }
    }

    /// The Sentinel settings when the endpoint is a Sentinel master, else nil; setting nil changes nothing.
    public var sentinel: Sentinel? {
        get {
            if case .sentinel(let sentinel) = endpoint { return sentinel }
            return nil
        }
        set {
            if let newValue { endpoint = .sentinel(newValue) }
        }
    }

    /// Applies a master name to a Sentinel configuration that has none (the meaning of
    /// `CELERY_BROKER_MASTER_NAME`); other configurations, and a name already set, are left as they are.
    public func withDefaultMasterName(_ name: String?) -> RedisConfiguration {
        guard var sentinel, sentinel.masterName == nil, let name, !name.isEmpty else { return self }
        sentinel.masterName = name
        var configuration = self
        configuration.sentinel = sentinel
        return configuration
    }

    /// Applies the sentinels' password to a Sentinel configuration that has none (`REDIS_SENTINEL_PASSWORD`).
    public func withDefaultSentinelPassword(_ password: String?) -> RedisConfiguration {
        guard var sentinel, sentinel.password == nil, let password, !password.isEmpty else { return self }
        sentinel.password = password
        var configuration = self
        configuration.sentinel = sentinel
        return configuration
    }

    /// Parses kombu's Sentinel URL: one or more `sentinel://[[user]:password@]host[:port][/db]` joined by `;`.
    ///
    /// As in kombu, the user, password and database of the first URL that has them are the master's; every URL
    /// adds a sentinel (port 26379 by default). Query parameters (on any of the URLs, the first one given wins):
    /// `master_name`, `sentinel_username` and `sentinel_password` (kombu's `sentinel_kwargs`), `ssl=true` or any
    /// `ssl_*` parameter of ``init(url:)`` for TLS to the master and the sentinels alike, the timeouts and
    /// `client_name`.
    ///
    /// - Throws: `RedisError` with code `.invalidURL`; its message never contains a password.
    init(sentinelURL url: String) throws(RedisError) {
        var sentinels: [Sentinel.Address] = []
        var query: [String: String] = [:]
        var username: String?
        var password: String?
        var database: Int?
        for piece in url.split(separator: ";", omittingEmptySubsequences: true) {
            let text = piece.trimmingSpaces
            guard text.hasPrefix("sentinel://") else {
                throw Self.invalid("every URL joined by ';' must be sentinel://")
            }
            let parts = try RedisURLParts(text)
            let (host, port) = try Self.hostAndPort(
                parts,
                defaultPort: Sentinel.defaultPort,
                noHost: "a sentinel:// URL has no host",
                badPort: "a sentinel's port is not a number between 1 and 65535"
            )
            sentinels.append(Sentinel.Address(host: host, port: port))
            if username == nil, let user = parts.username.map(RedisURLParts.percentDecoded), !user.isEmpty {
                username = user
            }
            if password == nil, let secret = parts.password.map(RedisURLParts.percentDecoded), !secret.isEmpty {
                password = secret
            }
            let digits = RedisURLParts.percentDecoded(parts.path).filter { $0 != "/" }
            if database == nil, !digits.isEmpty {
                guard let number = RedisURLParts.decimal(digits) else {
                    throw Self.invalid("the path is not a database number")
                }
                database = number
            }
            for (name, value) in RedisURLParts.queryItems(parts.query) where query[name] == nil {
                query[name] = value
            }
        }
        guard !sentinels.isEmpty else { throw Self.invalid("no sentinel:// URL") }

        self.init()
        endpoint = .sentinel(
            Sentinel(
                sentinels: sentinels,
                masterName: query["master_name"],
                username: query["sentinel_username"],
                password: query["sentinel_password"]
            )
        )
        if let value = query["db"] {
            guard let number = RedisURLParts.decimal(value) else { throw Self.invalidQuery("db") }
            database = number
        }
        self.database = database ?? 0
        self.username = username ?? query["username"]
        self.password = password ?? query["password"]
        if let value = query["socket_timeout"] {
            commandTimeout = try Self.duration(value, parameter: "socket_timeout")
        }
        if let value = query["socket_connect_timeout"] {
            connectTimeout = try Self.duration(value, parameter: "socket_connect_timeout")
        }
        clientName = query["client_name"]

        let wantsTLS =
            query["ssl"].map(RedisURLParts.bool) ?? query.keys.contains { $0.hasPrefix("ssl_") }
        if wantsTLS {
            self.tls = try Self.tls(TLS(), query: query)
        }
    }

    /// The Sentinel URL with both passwords replaced by `***`.
    func redactedSentinelURL(_ sentinel: Sentinel) -> String {
        var userInformation = ""
        if username != nil || password != nil {
            userInformation = RedisURLParts.percentEncoded(username ?? "", keeping: "")
            if password != nil { userInformation += ":***" }
            userInformation += "@"
        }
        let urls = sentinel.sentinels.enumerated().map { index, address in
            let host =
                address.host.contains(":")
                ? "[\(address.host)]" : RedisURLParts.percentEncoded(address.host, keeping: ".")
            return "sentinel://\(index == 0 ? userInformation : "")\(host):\(address.port)/\(database)"
        }
        var query: [(String, String)] = []
        if let masterName = sentinel.masterName { query.append(("master_name", masterName)) }
        if let user = sentinel.username { query.append(("sentinel_username", user)) }
        if sentinel.password != nil { query.append(("sentinel_password", "***")) }
        if tls != nil { query.append(("ssl", "true")) }
        query += tlsQueryItems() + timeoutAndNameQueryItems()
        // The query goes on the last URL, where kombu's own parsing of the whole string leaves it too.
        return urls.joined(separator: ";") + Self.renderedQuery(query)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
