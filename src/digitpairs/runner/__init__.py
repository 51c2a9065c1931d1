"""Running studies: the driver of a study (plan, leases, storing runs), the backends that train its units (this
process, worker processes, Ray), and the bench that compares the engine with a plain loop."""
