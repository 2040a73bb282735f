"""The domain: what an SMS is (`models`), how a record becomes one (`codec`), the document
stored for it (`document`), the parse result contract (`result`) and the builtin parser
(`parser`, which decides the category, over `money`, `transaction`, `otp`, `orders` and
`names`). Imports nothing of the package but `errors`."""
