"""Development tooling and test doubles: reference upstream, dev-stack, demo, simulator,
fakes. Nothing outside `devkit` imports it, and the runtime image leaves it out."""
