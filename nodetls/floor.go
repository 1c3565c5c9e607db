package nodetls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/loopze/certstore/internal/durable"
)

// The generation floor is a small file beside a credentials file, named after it with
// floorSuffix (credentials.json.floor), holding for each tenant the highest generation a
// Store accepted from that file. A Store refuses a file below it, after a restart as
// before one, and Sync refuses to write one; deleting the floor file is how an operator
// rolls back on purpose. Only a Store raises it: it has authenticated the generation
// under the master key, which the clear header Sync sees is not.
const floorSuffix = ".floor"

// maxFloorSize bounds the floor file: one line per tenant that ever used the file.
const maxFloorSize = 1 << 20

// floorFile is the floor file's content.
type floorFile struct {
	Tenants map[string]int64 `json:"tenants"`
}

func floorPath(file string) string { return file + floorSuffix }

// readFloor returns the floors recorded beside file; none when there is no floor file.
// A floor file that is not one is an error, so that it refuses files rather than
// guarding nothing.
func readFloor(ctx context.Context, file string) (map[string]int64, error) {
	path := floorPath(file)
	data, err := readFile(ctx, path, maxFloorSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("generation floor %s: %w", path, err)
	}
	var f floorFile
	if err := json.Unmarshal(data, &f); err != nil || f.Tenants == nil {
		return nil, fmt.Errorf("generation floor %s is not one (delete it to accept the credentials file as it is)", path)
	}
	return f.Tenants, nil
}

// checkFloor refuses generation gen of tenant when the floor beside file is above it.
func checkFloor(ctx context.Context, file, tenant string, gen int64) error {
	floors, err := readFloor(ctx, file)
	if err != nil {
		return err
	}
	if floor := floors[tenant]; gen < floor {
		return fmt.Errorf("%w: generation %d, while generation %d was accepted here before (recorded in %s; delete it to roll back on purpose)",
			ErrStaleFile, gen, floor, floorPath(file))
	}
	return nil
}

// raiseFloor records gen as tenant's floor beside file unless as high a one is there.
// The floors are read again just before the write, so runtimes sharing the file each
// add theirs; two raising it in the same instant may leave the lower of their two
// generations, until the next file either of them accepts raises it.
func raiseFloor(ctx context.Context, file, tenant string, gen int64) error {
	floors, err := readFloor(ctx, file)
	if err != nil {
		return err
	}
	if floors[tenant] >= gen {
		return nil
	}
	if floors == nil {
		floors = map[string]int64{}
	}
	floors[tenant] = gen
	data, err := json.MarshalIndent(floorFile{Tenants: floors}, "", "  ")
	if err != nil {
		return fmt.Errorf("generation floor %s: %w", floorPath(file), err)
	}
	if err := durable.Replace(floorPath(file), append(data, '\n'), durable.Mode(0o600)); err != nil {
		return fmt.Errorf("generation floor %s: %w", floorPath(file), err)
	}
	return nil
}
