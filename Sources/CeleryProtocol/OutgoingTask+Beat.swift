import JSON

extension OutgoingTask {
    /// The protocol v2 headers exactly as Celery 5.7's beat writes them (docs/protocol.md §6): beat sends through
    /// `send_task`, so `ignore_result` is null and `argsrepr` is the list's repr (`[2, 3]`); custom headers follow
    /// Celery's own, and `celery_beat_task: true` comes last.
    public var beatHeaders: JSONObject {
        var object = messageHeaders
        object["argsrepr"] = .string(PythonRepr.render(.array(args)))
        object["ignore_result"] = .null
        object["celery_beat_task"] = .bool(true)
        return object
    }

    /// The kombu envelope to `LPUSH` onto `list`, as Celery beat sends it (see ``beatHeaders``).
    public func beatEnvelope(deliveryTag: String = OutgoingTask.newID(), now: CeleryTimestamp = .now()) -> [UInt8] {
        envelope(headers: beatHeaders, deliveryTag: deliveryTag, now: now)
    }
}
