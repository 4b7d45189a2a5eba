# A rollout starts small: its first step sends at most `max_first_step` percent to the canary.
package weir

import rego.v1

max_first_step := 10

deny contains msg if {
	some r in input.config.routes
	first := r.rollout.steps[0]
	first > max_first_step
	msg := sprintf("route %s: the rollout's first step is %d%%, more than %d%%", [r.name, first, max_first_step])
}
