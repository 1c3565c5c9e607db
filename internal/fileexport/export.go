package fileexport

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/tenantkey"
)

// Exporter writes tenants' files from the database into one data directory. It is safe
// for concurrent use: per tenant, one export runs at a time in the process (a mutex) and
// across processes sharing the directory (an advisory lock beside the file), and each
// export reads the database only once it holds both, so a later write never carries older
// data than the one before it.
type Exporter struct {
	// Pool reaches the database.
	Pool *pgxpool.Pool
	// Keys open each tenant's rows and seal its file, under that tenant's keys.
	Keys *tenantkey.Keys
	// DataDir is where the files go (see Path).
	DataDir string
	// Logger receives one line per file written.
	Logger *slog.Logger
	// OnWrite, when set, is called after each export that wrote a file, and after each
	// export that found the file at a generation this Exporter had not seen it at: another
	// process sharing the directory wrote it (Result.Written is false then).
	OnWrite func(Result)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// EncodedCacheBytes bounds the memory kept between exports so that an export encodes
	// only the entries and node credentials that changed; DefaultEncodedCacheBytes when
	// zero, no cache when negative.
	EncodedCacheBytes int64

	mu      sync.Mutex
	tenants map[string]*tenantState

	cacheOnce sync.Once
	cache     *encodedCache
	// rowsRead counts the entries read with their sealed material.
	rowsRead atomic.Int64
}

// tenantState is the Exporter's per-tenant bookkeeping.
type tenantState struct {
	write sync.Mutex // held for a whole export
	seen  seenFile   // guarded by write

	// The fields below are guarded by Exporter.mu.
	fileGeneration int64
	dbGeneration   int64
	keyID          string
	lastWrite      time.Time
	lastError      string
	pendingSince   time.Time // earliest change notice not yet on disk; zero when none
	notifiedAt     time.Time // latest change notice
	writes, errors int64
}

// Result describes one export of a tenant.
type Result struct {
	Tenant          string
	Path            string
	Generation      int64
	KeyID           string
	Entries         int
	References      int
	NodeCredentials int
	// Written is false when the file was already at the database's generation and key.
	Written bool
	// Resealed is true when the file's document was sealed again as it was, only the
	// wrapping of the tenant key in its header having moved; the counts above are then
	// zero, as for a file that was current.
	Resealed bool
	Duration time.Duration
}

// Status is the export state of one tenant, for metrics and doctor.
type Status struct {
	Tenant         string
	FileGeneration int64
	DBGeneration   int64
	KeyID          string
	LastWrite      time.Time
	LastError      string
	// PendingSince is when the oldest change not yet on disk was announced; zero when the
	// file is current as far as this process knows.
	PendingSince time.Time
	Writes       int64
	Errors       int64
}

func (x *Exporter) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}

func (x *Exporter) logger() *slog.Logger {
	if x.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return x.Logger
}

func (x *Exporter) state(tenant string) *tenantState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.tenants == nil {
		x.tenants = map[string]*tenantState{}
	}
	st, ok := x.tenants[tenant]
	if !ok {
		st = &tenantState{}
		x.tenants[tenant] = st
	}
	return st
}

// MarkPending records that tenant changed at t (a NOTIFY arrived), for the lag metric.
func (x *Exporter) MarkPending(tenant string, t time.Time) {
	st := x.state(tenant)
	x.mu.Lock()
	defer x.mu.Unlock()
	if st.pendingSince.IsZero() {
		st.pendingSince = t
	}
	st.notifiedAt = t
}

// Status returns the export state of every tenant this Exporter has seen.
func (x *Exporter) Status() []Status {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]Status, 0, len(x.tenants))
	for id, st := range x.tenants {
		out = append(out, Status{
			Tenant: id, FileGeneration: st.fileGeneration, DBGeneration: st.dbGeneration, KeyID: st.keyID,
			LastWrite: st.lastWrite, LastError: st.lastError, PendingSince: st.pendingSince,
			Writes: st.writes, Errors: st.errors,
		})
	}
	return out
}

// AllAtOnce is how many tenants ExportAll exports at once: one per processor, and at least
// four, since writing a file waits for its fsync about as long as sealing it computes, and
// the disk takes several fsyncs at once much faster than one after another.
func AllAtOnce() int { return max(4, runtime.GOMAXPROCS(0)) }

// ExportAll exports every tenant of the database, AllAtOnce at a time: a master key
// rotation re-exports every tenant's file. Without force, files already at their tenant's generation and
// under the current key are left alone. A failing tenant does not stop the others; the
// errors are joined. The results are in tenant order, without those that failed.
func (x *Exporter) ExportAll(ctx context.Context, force bool) ([]Result, error) {
	tenants, err := repo.ListTenants(ctx, x.Pool)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	results := make([]Result, len(tenants))
	errs := make([]error, len(tenants))
	var g errgroup.Group
	g.SetLimit(AllAtOnce())
	for i, t := range tenants {
		g.Go(func() error {
			results[i], errs[i] = x.ExportTenant(ctx, t.ID, force)
			return nil
		})
	}
	_ = g.Wait() // every error is in errs
	out := make([]Result, 0, len(tenants))
	for i, r := range results {
		if errs[i] == nil {
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// ExportTenant writes tenant's file when it is missing, unreadable, at another generation
// than the database or under another key than the current one; with force, always.
func (x *Exporter) ExportTenant(ctx context.Context, tenant string, force bool) (Result, error) {
	st := x.state(tenant)
	st.write.Lock()
	defer st.write.Unlock()

	start := x.now()
	res, err := x.export(ctx, st, tenant, force)
	res.Duration = x.now().Sub(start)

	x.mu.Lock()
	moved := err == nil && res.Generation != st.fileGeneration
	if err != nil {
		st.errors++
		st.lastError = err.Error()
	} else {
		st.lastError = ""
		st.fileGeneration, st.dbGeneration, st.keyID = res.Generation, res.Generation, res.KeyID
		if res.Written {
			st.writes++
			st.lastWrite = x.now()
		}
		// Notices that came after this export read the database may describe changes it
		// missed: they stay pending.
		if st.notifiedAt.After(start) {
			st.pendingSince = st.notifiedAt
		} else {
			st.pendingSince = time.Time{}
		}
	}
	x.mu.Unlock()

	if err != nil {
		return res, fmt.Errorf("export tenant %s: %w", tenant, err)
	}
	if res.Written {
		x.logger().Info("credentials file written", "tenant", tenant, "path", res.Path,
			"generation", res.Generation, "key_id", res.KeyID, "entries", res.Entries,
			"node_credentials", res.NodeCredentials, "resealed", res.Resealed, "duration_ms", res.Duration.Milliseconds())
	}
	if x.OnWrite != nil && (res.Written || moved) {
		x.OnWrite(res)
	}
	return res, nil
}

func (x *Exporter) export(ctx context.Context, st *tenantState, tenant string, force bool) (Result, error) {
	path := credfile.Path(x.DataDir, tenant)
	res := Result{Tenant: tenant, Path: path}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return res, fmt.Errorf("create directory for %s: %w", path, err)
	}
	unlock, err := durable.Lock(ctx, lockPath(path))
	if err != nil {
		return res, err
	}
	defer unlock()
	removeStaleTemps(path)

	onDisk, haveFile := x.readHeader(st, path)
	// Folding keeps the generation's read short; a failed fold changes nothing.
	if err := repo.FoldChanges(ctx, x.Pool, tenant); err != nil && ctx.Err() == nil {
		x.logger().Warn("fold generation changes", "tenant", tenant, "err", err)
	}
	fk, err := x.Keys.FileKey(ctx, tenant)
	if err != nil {
		return res, err
	}
	defer clear(fk.Key)
	ring, err := x.Keys.Ring(ctx, tenant)
	if err != nil {
		return res, err
	}
	// A file is current when it holds the database's generation, sealed under the
	// tenant's current key and carrying it wrapped under the current master key. One that
	// holds the generation under the current key, its wrapping alone having moved (a master
	// key rotation rewrapped the tenant key), holds the document the database would give:
	// it is sealed again as it is, instead of read and encoded again.
	sealedUnder := onDisk.Version == credfile.Version && onDisk.KeyID == fk.ID() && onDisk.TenantKey != nil &&
		onDisk.TenantKey.Version == fk.TenantKey.Version
	sealedNow := sealedUnder && *onDisk.TenantKey == fk.TenantKey
	var reseal bool
	doc, err := x.snapshot(ctx, tenant, ring, func(gen int64) bool {
		if force || !haveFile || onDisk.Generation != gen || !sealedUnder {
			return false
		}
		reseal = !sealedNow
		return true
	})
	if err != nil {
		return res, err
	}
	if doc == nil && reseal {
		ok, err := x.reseal(st, path, fk, onDisk.Generation, &res)
		if ok || err != nil {
			return res, err
		}
		if doc, err = x.snapshot(ctx, tenant, ring, func(int64) bool { return false }); err != nil {
			return res, err
		}
	}
	if doc == nil { // current already
		res.Generation, res.KeyID = onDisk.Generation, onDisk.KeyID
		return res, nil
	}
	defer doc.Release()
	if haveFile && onDisk.Generation > doc.Generation {
		// The database was restored from an older backup, or replaced. It is the source of
		// truth, but the newer file is kept aside rather than lost.
		aside := fmt.Sprintf("%s.ahead-%d", path, onDisk.Generation)
		if err := os.Link(path, aside); err != nil && !errors.Is(err, fs.ErrExist) {
			return res, fmt.Errorf("keep %s aside before rewriting it: %w", path, err)
		}
		x.logger().Warn("credentials file is ahead of the database; kept it aside and rewriting it from the database",
			"tenant", tenant, "path", path, "kept_as", aside, "file_generation", onDisk.Generation, "db_generation", doc.Generation)
	}
	data, h, err := doc.Seal(fk)
	if err != nil {
		return res, err
	}
	st.seen = seenFile{}
	if err := WriteAtomic(path, data); err != nil {
		return res, err
	}
	if info, err := os.Stat(path); err == nil {
		st.seen = seenFile{info: info, header: h}
	}
	res.Generation, res.KeyID, res.Written = h.Generation, h.KeyID, true
	res.Entries, res.References, res.NodeCredentials = doc.Entries, doc.References, doc.NodeCredentials
	return res, nil
}

// reseal seals the document of the file at path again under fk, whose wrapping of the
// tenant key alone differs from the file's header, and writes it (see credfile.Reseal).
// It reports false, having written nothing, when the file turns out not to be one it can
// reseal at generation gen (damaged, or laid out otherwise): the caller exports it in full.
func (x *Exporter) reseal(st *tenantState, path string, fk credfile.FileKey, gen int64, res *Result) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		x.logger().Warn("cannot read credentials file; exporting it in full", "path", path, "err", err)
		return false, nil
	}
	out, h, err := credfile.Reseal(fk, data)
	if err == nil && h.Generation != gen {
		err = fmt.Errorf("the file holds generation %d, not %d", h.Generation, gen)
	}
	if err != nil {
		x.logger().Warn("cannot seal the credentials file again as it is; exporting it in full", "path", path, "err", err)
		return false, nil
	}
	st.seen = seenFile{}
	if err := WriteAtomic(path, out); err != nil {
		return false, err
	}
	if info, err := os.Stat(path); err == nil {
		st.seen = seenFile{info: info, header: h}
	}
	res.Generation, res.KeyID, res.Written, res.Resealed = h.Generation, h.KeyID, true, true
	return true, nil
}

// lockPath is the advisory lock file beside a tenant's file.
func lockPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock")
}

// readHeader returns the header of the file at path, if it has a readable one. A large
// tenant's file is tens of megabytes, so the header is remembered with the file's size,
// modification time and inode, and re-read only when one of them changed.
func (x *Exporter) readHeader(st *tenantState, path string) (credfile.Header, bool) {
	info, err := os.Stat(path)
	if err == nil && st.seen.same(info) {
		return st.seen.header, true
	}
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			x.logger().Warn("cannot read credentials file; rewriting it", "path", path, "err", err)
		}
		return credfile.Header{}, false
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		info = nil // the header is still good; it is only not remembered
	}
	// The header alone: a large tenant's file is tens of megabytes, and reading and
	// validating all of it for its generation took a quarter of the CPU of a busy export.
	h, err := credfile.ReadHeader(f)
	if err != nil {
		x.logger().Warn("credentials file is damaged; rewriting it", "path", path, "err", err)
		return credfile.Header{}, false
	}
	if info != nil {
		st.seen = seenFile{info: info, header: h}
	}
	return h, true
}

// seenFile is a file's header as last read or written, with the stat that identified it.
type seenFile struct {
	info   fs.FileInfo
	header credfile.Header
}

func (s seenFile) same(info fs.FileInfo) bool {
	return s.info != nil && os.SameFile(s.info, info) && s.info.Size() == info.Size() && s.info.ModTime().Equal(info.ModTime())
}

// snapshot reads the tenant's generation and rows in one repeatable-read transaction, so
// the generation labels exactly the rows read, and encodes them as a document, reusing the
// encodings of the rows that did not change since an earlier export. When
// current(generation) is true it stops there and returns nil.
func (x *Exporter) snapshot(ctx context.Context, tenant string, ring *envelope.Ring, current func(int64) bool) (*credfile.Encoded, error) {
	return db.InTenantV(ctx, x.Pool, tenant, func(tx pgx.Tx) (*credfile.Encoded, error) {
		return x.read(ctx, tx, tenant, ring, current)
	}, db.Snapshot())
}

// read encodes the tenant's document inside the snapshot transaction tx.
func (x *Exporter) read(ctx context.Context, tx pgx.Tx, tenant string, ring *envelope.Ring, current func(int64) bool) (*credfile.Encoded, error) {
	gen, err := repo.GetGeneration(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	if current(gen) {
		return nil, nil
	}
	encEntries, err := x.readEntries(ctx, tx, tenant, ring)
	if err != nil {
		return nil, err
	}
	workspace, err := repo.ExportWorkspace(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	refs, err := repo.ExportReferences(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	secrets, err := repo.ExportNodeSecrets(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	references := make([]credfile.Reference, 0, len(refs))
	for _, r := range refs {
		references = append(references, credfile.Reference(r))
	}
	encCreds := make([][]byte, 0, len(secrets))
	for i, s := range secrets {
		b, err := x.encodeNodeCredential(tenant, ring, s)
		if err != nil {
			return nil, err
		}
		encCreds = append(encCreds, b)
		secrets[i].Sealed = nil
	}
	doc, err := credfile.EncodeDocument(tenant, gen, x.now().UTC(), x.auditHead(ctx, tx, tenant), encEntries, workspace, references, encCreds)
	if err != nil {
		return nil, fmt.Errorf("encode credentials of %s: %w", tenant, err)
	}
	return doc, nil
}

// auditHead is the head of tenant's audit trail in the snapshot, for the file to carry as a
// checkpoint; nil when the trail is empty, or when its head is inconsistent (which audit
// verify reports: the file is written all the same, as a restore needs it).
func (x *Exporter) auditHead(ctx context.Context, tx pgx.Tx, tenant string) *credfile.AuditHead {
	cp, err := audit.Head(ctx, tx, tenant)
	if err != nil {
		x.logger().Warn("the file carries no audit checkpoint", "tenant", tenant, "err", err)
		return nil
	}
	if cp.Seq == 0 {
		return nil
	}
	return &credfile.AuditHead{Seq: cp.Seq, MAC: hex.EncodeToString(cp.MAC), KeyVersion: cp.KeyVersion}
}

// readEntries returns the encodings of the tenant's entries in ID order, inside the
// snapshot transaction tx. It reads every entry's row stamp, takes the encodings whose
// stamp did not move from the cache, and reads with their sealed material only the rows
// that changed (all of them in one scan when most did): an export after one change reads
// one sealed row, not the whole tenant.
func (x *Exporter) readEntries(ctx context.Context, tx pgx.Tx, tenant string, ring *envelope.Ring) ([][]byte, error) {
	stamps, err := repo.ExportStamps(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	c := x.encodedCacheFor()
	enc := make([][]byte, len(stamps))
	missing := map[string]int{}
	var ids []string
	for i, s := range stamps {
		if b, ok := c.get(entryKey(tenant, s.ID), rowStamp(s)); ok {
			enc[i] = b
			continue
		}
		missing[s.ID] = i
		ids = append(ids, s.ID)
	}
	if len(ids) == 0 {
		return enc, nil
	}
	if 2*len(ids) > len(stamps) {
		ids = nil
	}
	entries, xmins, err := repo.ExportEntriesStamped(ctx, tx, tenant, ids)
	if err != nil {
		return nil, err
	}
	x.rowsRead.Add(int64(len(entries)))
	// Each row is let go once encoded, so the sealed rows of a large tenant are not all
	// held until its document is complete.
	for k, e := range entries {
		entries[k] = nil
		i, ok := missing[e.ID]
		if !ok {
			continue // read by the whole scan, and its encoding is cached
		}
		st := rowStamp(repo.RowStamp{ID: e.ID, XMin: xmins[k], Version: e.Version, UpdatedAt: e.UpdatedAt})
		if enc[i], err = x.encodeEntry(tenant, ring, e, st); err != nil {
			return nil, err
		}
		delete(missing, e.ID)
	}
	for id := range missing {
		// The stamps and the rows come from one snapshot, so this cannot happen.
		return nil, fmt.Errorf("entry %s of %s is missing from the export's snapshot", id, tenant)
	}
	return enc, nil
}

func documentEntry(tenant string, ring *envelope.Ring, e *repo.Entry) (credfile.Entry, error) {
	de := credfile.Entry{
		ID: e.ID, Name: e.Name, Type: string(e.Type), Source: e.Source, Notes: e.Notes,
		CertPath: e.CertPath, KeyPath: e.KeyPath, PassphraseFile: e.PassphrasePath,
		Metadata: e.Meta.InUTC(), CreatedAt: e.CreatedAt.UTC(), UpdatedAt: e.UpdatedAt.UTC(),
	}
	if len(e.Sealed.Cert) > 0 {
		cert, key, err := sealing.OpenPair(ring, sealing.Place{Tenant: tenant, EntryID: e.ID}, e.Sealed)
		if err != nil {
			return credfile.Entry{}, err
		}
		de.CertPEM, de.KeyPEM = string(cert), string(key)
	}
	return de, nil
}
