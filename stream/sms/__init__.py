"""The domain: what an SMS is (`models`), how a record becomes one (`codec`), the builtin
parser (`parser`). Imports nothing of the package but `errors`."""
