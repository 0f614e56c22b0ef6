package deliver

import "errors"

// Metrics receives the outcome of every LMTP recipient, for monitoring.
// Calls come concurrently from sessions and must return quickly.
// LMTPOptions.Metrics nil turns them off. No user name or address is passed.
type Metrics interface {
	// Delivery is called once per recipient refused at RCPT, once per user
	// of a message after DATA, and once per message refused at MAIL for its
	// declared SIZE, with one of the Outcome constants.
	Delivery(outcome string)
}

// Outcomes given to Metrics.Delivery.
const (
	OutcomeOK            = "ok"             // 250: durable in the user's log
	OutcomeUnknownUser   = "unknown_user"   // 550 5.1.1
	OutcomeUnknownDomain = "unknown_domain" // 550 5.1.2
	OutcomeTooLarge      = "too_large"      // 552 5.3.4
	OutcomeResources     = "resources"      // 452 4.3.1
	OutcomeOverQuota     = "over_quota"     // 452 4.2.2
	OutcomeTemporary     = "temporary"      // 451 4.3.0
)

// Outcomes are all the Outcome constants, for a monitor that shows every
// outcome from the start.
var Outcomes = []string{OutcomeOK, OutcomeUnknownUser, OutcomeUnknownDomain, OutcomeTooLarge,
	OutcomeResources, OutcomeOverQuota, OutcomeTemporary}

// OutcomeOf names the outcome of a delivery that ended with err.
func OutcomeOf(err error) string {
	if errors.Is(err, errNotLocalDomain) {
		return OutcomeUnknownDomain
	}
	switch KindOf(err) {
	case KindNone:
		return OutcomeOK
	case KindUnknownUser:
		return OutcomeUnknownUser
	case KindTooLarge:
		return OutcomeTooLarge
	case KindResources:
		return OutcomeResources
	case KindOverQuota:
		return OutcomeOverQuota
	}
	return OutcomeTemporary
}

type noMetrics struct{}

func (noMetrics) Delivery(string) {}
