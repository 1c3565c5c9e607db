//go:build !testcontainers

package testdb

import "fmt"

// openContainer without the testcontainers tag has no container source to offer: the
// harness falls through to the local server binaries, and a run that insists on
// containers (LOOPZE_TEST_DB_SOURCE=testcontainers) fails saying how to build one.
func openContainer() (*source, error) {
	return nil, fmt.Errorf("%w: this test binary was built without -tags testcontainers", errNoEngine)
}
