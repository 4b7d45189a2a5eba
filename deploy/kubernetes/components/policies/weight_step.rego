# A backend's share of a route may rise by at most `max_step` percentage points in one change
# (the route's first backend, the stable, excepted). Bigger jumps should go through a rollout,
# which weir checks step by step. Routes with a `rollout:` are exempt: weir drives their weights.
package weir

import rego.v1

max_step := 20

weight_share(route, upstream) := s if {
	total := sum([b.weight | some b in route.backends])
	total > 0
	some b in route.backends
	b.upstream == upstream
	s := (b.weight * 100) / total
}

previous_share(route, upstream) := s if {
	s := weight_share(route, upstream)
} else := 0

deny contains msg if {
	some new in input.config.routes
	not new.rollout
	some old in input.previous.routes
	old.name == new.name
	some i, b in new.backends
	i > 0
	after := weight_share(new, b.upstream)
	before := previous_share(old, b.upstream)
	after - before > max_step
	msg := sprintf(
		"route %s: %s would go from %v%% to %v%% of the traffic, more than %v points in one change (use a rollout)",
		[new.name, b.upstream, round(before), round(after), max_step],
	)
}
