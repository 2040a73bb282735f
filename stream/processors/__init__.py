"""What turns an SMS into a parse result: the builtin parser, or the parse API over HTTP
under the adaptive limiter. Implements `stream.engine.ports.Processor`."""
