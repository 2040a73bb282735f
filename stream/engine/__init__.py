"""The at-least-once machinery: fetch, batch, route failures, settle, commit.

Takes a `stream.clock.Clock` and the small protocols of `ports`; builds no clients. May
import `clock`, `sms`, `config`, `errors` and `observability`, never `adapters`,
`processors`, `tools` or `devkit`.
"""
