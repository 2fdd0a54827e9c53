"""segment-analytics-python's tests that the compat suite skips, each with its reason.

Keyed by ``Class::test``. Everything not listed here runs against durable_analytics and must
pass. The reasons are of three kinds, the ones the issue allows: the test imports one of
segment's internal modules (``consumer``, ``request``, ``utils``, ``oauth_manager``) or
patches one by name, or it reads ``client.queue`` / ``client.consumers`` (segment's in-memory
queue and threads, which a disk-backed client does not have).
"""

INTERNAL = "tests segment's internal module {} (not part of the public API)"
QUEUE = "reads client.queue (segment's in-memory queue; here the queue is the file: stats())"
CONSUMERS = "reads client.consumers (segment's threads; here one worker per process)"

SKIPPED = {
    # test_client.py
    "TestClient::test_flush": QUEUE,
    "TestClient::test_shutdown": QUEUE + "; " + CONSUMERS,
    "TestClient::test_synchronous": QUEUE + "; " + CONSUMERS,
    "TestClient::test_user_defined_upload_size": INTERNAL.format(
        "consumer (patches consumer.post)"
    ),
    "TestClient::test_user_defined_timeout": CONSUMERS,
    "TestClient::test_default_timeout_15": CONSUMERS,
    "TestClient::test_proxies": INTERNAL.format("request (patches request._session.post)"),
    # test_init.py
    "TestInit::test_max_queue_size": QUEUE,
    "TestInit::test_max_retries": CONSUMERS,
    # test_consumer.py: the Consumer class itself, except the two Client tests
    "TestConsumer::*": INTERNAL.format("consumer (the Consumer thread, post, APIError)"),
    "TestConsumer::test_client_defaults_to_the_documented_rate_limit_budget": CONSUMERS,
    # test_oauth.py
    "TestOauthManager::*": INTERNAL.format("oauth_manager (the OauthManager class)"),
    "TestOauthIntegration::*": INTERNAL.format("oauth_manager (imported by the file)")
    + " and replaces requests.Session.post with a fake answering segment's exact call "
    "sequence; OAuth is tested against a real token endpoint in tests/test_oauth.py",
    # test_request.py and test_utils.py: request.post, APIError, DatetimeSerializer, utils
    "TestRequests::*": INTERNAL.format("request"),
    "TestNonObjectErrorBody::*": INTERNAL.format("request"),
    "TestUtils::*": INTERNAL.format("utils"),
}

#: Tests of a class skipped with ``Class::*`` that run all the same: they use only Client.
RUN_ANYWAY = {
    "TestConsumer::test_none_max_total_backoff_duration_rejected_by_client",
    "TestConsumer::test_none_max_rate_limit_duration_rejected_by_client",
}


def reason(class_name: str, test_name: str) -> "str | None":
    key = f"{class_name}::{test_name}"
    if key in SKIPPED:
        return SKIPPED[key]
    if key in RUN_ANYWAY:
        return None
    return SKIPPED.get(f"{class_name}::*")
