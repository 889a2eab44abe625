"""Developer tooling of the workspace (not shipped in any service image): the local stack
supervisor, the demo, the demo book, and an OMS simulator."""
