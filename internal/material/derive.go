package material

import (
	"context"
	"errors"
	"fmt"
)

// Budget admits key derivations: the server's is internal/kdf's Budget. Acquire waits
// until tenant may run one derivation needing memory bytes and returns the function that
// gives the admission back; its error (a full budget, ctx ended) means the derivation
// must not run.
type Budget interface {
	Acquire(ctx context.Context, tenant string, memory int64) (release func(), err error)
}

// KDF says how the key derivations of one decode are admitted: charged to Tenant under
// Budget. The zero value derives at once, as the runtime side and the command-line tools
// do; every request of the server goes through the server's budget.
type KDF struct {
	Budget Budget
	Tenant string
}

// ErrNotAdmitted means a key derivation the material needs was not run: the budget was
// full or the caller's context ended first. The material was not judged; trying again
// later may succeed. The budget's or the context's error is wrapped too, so errors.Is
// finds kdf.ErrBusy or context.Canceled.
var ErrNotAdmitted = errors.New("key derivation not admitted")

// MaxDerivations bounds the key derivations of one input. The most a valid input needs is
// a PKCS#12 with an empty passphrase: two candidates for its MAC (the empty string and no
// bytes, as tools disagree), two encrypted contents and its key.
const MaxDerivations = 5

// derivationSlack is the memory a derivation is charged beyond what its algorithm
// allocates in bulk: hash states, the derived key, the decrypted copy.
const derivationSlack = 64 << 10

// deriver runs the key derivations of one input, in order, under its caller's context and
// budget, and counts them: a context that ended or a budget that says no stops it before
// the next one, and more than MaxDerivations are refused.
type deriver struct {
	ctx context.Context
	kdf KDF
	// n is the number of derivations run so far.
	n int
}

func newDeriver(ctx context.Context, k KDF) *deriver { return &deriver{ctx: ctx, kdf: k} }

// run runs f, which derives count keys needing memory bytes at most at once, once the
// budget admits it. Its errors wrap errOverLimit (too many derivations for one input) or
// ErrNotAdmitted.
func (d *deriver) run(count int, memory int64, f func() error) error {
	if d.n+count > MaxDerivations {
		return pbeErr(errOverLimit, "it needs more than %d key derivations", MaxDerivations)
	}
	if err := d.ctx.Err(); err != nil {
		return fmt.Errorf("derive a key: %w: %w", ErrNotAdmitted, err)
	}
	if d.kdf.Budget != nil {
		release, err := d.kdf.Budget.Acquire(d.ctx, d.kdf.Tenant, memory)
		if err != nil {
			return fmt.Errorf("derive a key: %w: %w", ErrNotAdmitted, err)
		}
		defer release()
		// The wait may have outlasted the caller.
		if err := d.ctx.Err(); err != nil {
			return fmt.Errorf("derive a key: %w: %w", ErrNotAdmitted, err)
		}
	}
	d.n += count
	return f()
}
