import CeleryClient
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

@Suite struct CeleryEnvironmentTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var broker: String?
        var environment: [String: String]
        var brokerURL: String
        var redisURL: String
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "nothing set: the default",
            environment: [:],
            brokerURL: "redis://127.0.0.1:6379/0",
            redisURL: "redis://127.0.0.1:6379/0"
        ),
        Case(
            name: "--broker wins over both variables",
            broker: "redis://flag:1/0",
            environment: ["CELERY_BROKER_URL": "redis://broker:2/0", "REDIS_URL": "redis://redis:3/0"],
            brokerURL: "redis://flag:1/0",
            redisURL: "redis://flag:1/0"
        ),
        Case(
            name: "CELERY_BROKER_URL only: Redis falls back to the broker",
            environment: ["CELERY_BROKER_URL": "redis://broker:2/0"],
            brokerURL: "redis://broker:2/0",
            redisURL: "redis://broker:2/0"
        ),
        Case(
            name: "REDIS_URL only: the broker falls back to Redis",
            environment: ["REDIS_URL": "redis://redis:3/0"],
            brokerURL: "redis://redis:3/0",
            redisURL: "redis://redis:3/0"
        ),
        Case(
            name: "both variables: each its own",
            environment: ["CELERY_BROKER_URL": "redis://broker:2/0", "REDIS_URL": "redis://redis:3/0"],
            brokerURL: "redis://broker:2/0",
            redisURL: "redis://redis:3/0"
        ),
        Case(
            name: "empty variables are ignored",
            environment: ["CELERY_BROKER_URL": "", "REDIS_URL": ""],
            brokerURL: "redis://127.0.0.1:6379/0",
            redisURL: "redis://127.0.0.1:6379/0"
        ),
        Case(
            name: "an empty REDIS_URL falls back to CELERY_BROKER_URL",
            environment: ["CELERY_BROKER_URL": "redis://broker:2/0", "REDIS_URL": ""],
            brokerURL: "redis://broker:2/0",
            redisURL: "redis://broker:2/0"
        ),
        Case(
            name: "an empty CELERY_BROKER_URL falls back to REDIS_URL",
            environment: ["CELERY_BROKER_URL": "", "REDIS_URL": "redis://redis:3/0"],
            brokerURL: "redis://redis:3/0",
            redisURL: "redis://redis:3/0"
        ),
    ]

    @Test(arguments: cases) func urlPrecedence(_ test: Case) {
        let environment = CeleryEnvironment(broker: test.broker, environment: test.environment)
        #expect(environment.brokerURL == test.brokerURL)
        #expect(environment.redisURL == test.redisURL)
    }

    @Test func resultBackendFallsBackToTheBroker() {
        let environment = CeleryEnvironment(environment: ["CELERY_BROKER_URL": "redis://broker:2/0"])
        #expect(environment.resultBackendURL == "redis://broker:2/0")
        let explicit = CeleryEnvironment(
            resultBackend: "redis://flag:9/1",
            environment: ["CELERY_RESULT_BACKEND": "redis://env:8/1"]
        )
        #expect(explicit.resultBackendURL == "redis://flag:9/1")
        #expect(
            CeleryEnvironment(environment: ["CELERY_RESULT_BACKEND": "redis://env:8/1"]).resultBackendURL
                == "redis://env:8/1"
        )
    }

    @Test(
        arguments: [
            // (URL, REDIS_PASSWORD, expected password)
            ("redis://h:1/0", "from-env", "from-env"),
            ("redis://:in-url@h:1/0", "from-env", "in-url"),
            ("redis://h:1/0", "", nil),
            ("redis://user:in-url@h:1/0", nil, "in-url"),
            ("redis://:@h:1/0", "from-env", "from-env"),
        ] as [(String, String?, String?)]
    )
    func redisPasswordOnlyWhenTheURLHasNone(url: String, redisPassword: String?, expected: String?) throws {
        var variables = ["REDIS_URL": url]
        variables["REDIS_PASSWORD"] = redisPassword
        let environment = CeleryEnvironment(environment: variables)
        #expect(try environment.redisConfiguration().password == expected)
        #expect(try environment.brokerConfiguration().password == expected)
        #expect(try environment.resultBackendConfiguration().password == expected)
        #expect(try !environment.redisConfiguration().description.contains("in-url"))
    }

    @Test func sentinelMasterNamesAndPasswordFromTheEnvironment() throws {
        let sentinels = "sentinel://:master-pw@s1:26379/0;sentinel://s2:26379/0"
        let environment = CeleryEnvironment(
            environment: [
                "CELERY_BROKER_URL": sentinels,
                "CELERY_RESULT_BACKEND": sentinels + "?master_name=in-url",
                "CELERY_BROKER_MASTER_NAME": "broker-master",
                "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
            ]
        )
        let broker = try environment.brokerConfiguration()
        #expect(broker.sentinel?.masterName == "broker-master")
        #expect(broker.sentinel?.password == "sentinel-pw")
        #expect(broker.password == "master-pw")
        #expect(try environment.redisConfiguration().sentinel?.masterName == "broker-master")
        // The URL's own name wins; CELERY_RESULT_BACKEND_MASTER_NAME, else the broker's, fills in a missing one.
        #expect(try environment.resultBackendConfiguration().sentinel?.masterName == "in-url")
        let split = CeleryEnvironment(
            environment: [
                "CELERY_BROKER_URL": sentinels, "CELERY_BROKER_MASTER_NAME": "b",
                "CELERY_RESULT_BACKEND_MASTER_NAME": "r",
            ]
        )
        #expect(try split.resultBackendConfiguration().sentinel?.masterName == "r")
        #expect(try split.brokerConfiguration().sentinel?.masterName == "b")
    }

    @Test func aSentinelURLWithoutMasterNameIsRefused() {
        #expect {
            _ = try CeleryEnvironment(broker: "sentinel://s1:26379", environment: [:]).brokerConfiguration()
        } throws: { error in
            (error as? RedisError)?.code == .invalidURL && "\(error)".contains("CELERY_BROKER_MASTER_NAME")
        }
    }

    @Test func aBadURLIsAnInvalidURLError() {
        #expect {
            _ = try CeleryEnvironment(broker: "http://x", environment: [:]).redisConfiguration()
        } throws: { error in
            (error as? RedisError)?.code == .invalidURL
        }
    }
}
