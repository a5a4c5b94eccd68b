// Package bolt is Weft's embedded, durable config store on go.etcd.io/bbolt,
// the default store for one-machine deployments.
//
// Layout (one bbolt file): bucket "resources" maps kind\x00namespace\x00name
// to the resource in Kubernetes JSON shape; bucket "log" maps the big-endian
// revision to the JSON events of that revision (kept for the last
// Options.Retention revisions, so Watch can resume across restarts); bucket
// "meta" holds the current and the compacted revision.
//
// Every Apply or Delete that changes something is one bbolt transaction with
// one new revision; bbolt fsyncs on commit, so an acknowledged write survives
// a crash. The bbolt file lock keeps other processes out, so the store also
// mirrors every resource in memory and serves Get and List from there.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
)

// DefaultRetention is how many revisions of history the event log keeps.
const DefaultRetention = 10000

var (
	bucketResources = []byte("resources")
	bucketLog       = []byte("log")
	bucketMeta      = []byte("meta")
	keyRevision     = []byte("revision")
	keyCompacted    = []byte("compacted")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Logger receives operational messages. Nil discards them.
	Logger *slog.Logger
	// Retention is how many of the latest revisions the event log keeps for
	// Watch replay; a Watch from an older revision fails with
	// store.ErrCompacted. Default DefaultRetention (10000).
	Retention int64
	// OpenTimeout bounds the wait for the file lock when another process
	// has the database open. Default 2s.
	OpenTimeout time.Duration
	// Now returns the current time, for CreationTimestamp. Default time.Now.
	Now func() time.Time
}

// Store is a store.Store on one bbolt file.
//
// Concurrency: every method is safe for concurrent use. Writes (Apply,
// Delete) are serialised; reads run in parallel with writes and see the last
// committed state. Watch channels are fed from per-watcher unbounded queues.
type Store struct {
	db        *bbolt.DB
	log       *slog.Logger
	retention int64
	now       func() time.Time
	bc        *store.Broadcaster

	writeMu sync.Mutex // serialises writes so events publish in order

	mu    sync.RWMutex // guards rev and cache, the committed state
	rev   int64
	cache map[config.Key]*config.Resource

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.OpenTimeout})
	if err != nil {
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	var rev int64
	cache := map[config.Key]*config.Resource{}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketResources, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		rev = getInt(tx.Bucket(bucketMeta), keyRevision)
		return tx.Bucket(bucketResources).ForEach(func(k, v []byte) error {
			r, err := decode(k, v)
			if err != nil {
				// Keep serving the rest; the next Apply of it replaces it.
				opts.Logger.Error("skipping unreadable stored resource", "path", path, "err", err)
				return nil
			}
			cache[r.Key()] = r
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init bolt store %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		log:       opts.Logger.With("store", "bolt", "path", path),
		retention: opts.Retention,
		now:       opts.Now,
		bc:        store.NewBroadcaster(rev),
		rev:       rev,
		cache:     cache,
		closed:    make(chan struct{}),
	}
	s.log.Debug("opened", "revision", rev, "resources", len(cache))
	return s, nil
}

func resourceKey(k config.Key) []byte {
	return []byte(k.Kind + "\x00" + k.Namespace + "\x00" + k.Name)
}

func revKey(rev int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return b[:]
}

func getInt(b *bbolt.Bucket, k []byte) int64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// closedErr turns bbolt's "database not open" (a Close that raced with the
// call) into store.ErrClosed.
func closedErr(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

func (s *Store) checkOpen() error {
	select {
	case <-s.closed:
		return store.ErrClosed
	default:
		return nil
	}
}

func decode(k, v []byte) (*config.Resource, error) {
	r := &config.Resource{}
	if err := r.UnmarshalJSON(v); err != nil {
		return nil, fmt.Errorf("decode stored resource %q: %w", bytes.ReplaceAll(k, []byte{0}, []byte{'/'}), err)
	}
	return r, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key config.Key) (*config.Resource, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if key.Namespace == "" {
		key.Namespace = config.DefaultNamespace
	}
	s.mu.RLock()
	r, ok := s.cache[key]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return r.DeepCopy(), nil
}

// List implements store.Store. With kind "" it returns every kind, sorted by
// namespace, name and kind.
func (s *Store) List(ctx context.Context, kind, namespace string) ([]*config.Resource, int64, error) {
	if err := s.checkOpen(); err != nil {
		return nil, 0, err
	}
	s.mu.RLock()
	var out []*config.Resource
	for k, r := range s.cache {
		if (kind == "" || k.Kind == kind) && (namespace == "" || k.Namespace == namespace) {
			out = append(out, r)
		}
	}
	rev := s.rev
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Meta.Namespace != b.Meta.Namespace {
			return a.Meta.Namespace < b.Meta.Namespace
		}
		if a.Meta.Name != b.Meta.Name {
			return a.Meta.Name < b.Meta.Name
		}
		return a.Kind < b.Kind
	})
	return copies(out), rev, nil
}

// logEvent is an event as kept in the log bucket.
type logEvent struct {
	Type     store.EventType  `json:"type"`
	Resource *config.Resource `json:"resource"`
}

// sameContent reports whether applying r over old would change nothing the
// user controls (apiVersion, labels, annotations, spec).
func sameContent(old, r *config.Resource) bool {
	return old.APIVersion == r.APIVersion &&
		maps.Equal(old.Meta.Labels, r.Meta.Labels) &&
		maps.Equal(old.Meta.Annotations, r.Meta.Annotations) &&
		proto.Equal(old.Spec, r.Spec)
}

// Apply implements store.Store. All resources are checked first (schema,
// mode, resourceVersion preconditions) and then written in one transaction
// with one new revision. A resource whose apiVersion, labels, annotations
// and spec equal the stored ones is returned unchanged and not rewritten;
// when nothing changes, no revision is used.
func (s *Store) Apply(ctx context.Context, mode store.ApplyMode, rs []*config.Resource) ([]*config.Resource, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	in := make([]*config.Resource, len(rs))
	seen := make(map[config.Key]int, len(rs))
	for i, r := range rs {
		if r == nil {
			return nil, fmt.Errorf("apply: resource %d is nil", i)
		}
		c := r.DeepCopy()
		c.Source = config.Source{}
		sch, ok := config.SchemaForKind(c.Kind)
		if !ok {
			return nil, fmt.Errorf("apply %s: unknown kind %q", r.Source, c.Kind)
		}
		if c.Meta.Name == "" {
			return nil, fmt.Errorf("apply %s %s: metadata.name is required", r.Source, c.Kind)
		}
		if c.Meta.Namespace == "" {
			c.Meta.Namespace = config.DefaultNamespace
		}
		if c.APIVersion == "" {
			c.APIVersion = sch.GroupVersion()
		}
		if c.Spec == nil {
			c.Spec = sch.NewSpec()
		}
		if j, dup := seen[c.Key()]; dup {
			return nil, fmt.Errorf("apply: %s appears twice (items %d and %d)", c.Key(), j, i)
		}
		seen[c.Key()] = i
		in[i] = c
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var (
		out    = make([]*config.Resource, len(in))
		events []store.Event
		next   int64
	)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		res := tx.Bucket(bucketResources)
		next = getInt(tx.Bucket(bucketMeta), keyRevision) + 1
		olds := make([]*config.Resource, len(in))
		// Pass 1: check every precondition before writing anything. The
		// cache equals the committed state: only writers change it, and
		// they hold writeMu.
		for i, r := range in {
			olds[i] = s.cache[r.Key()]
			old := olds[i]
			switch {
			case mode == store.CreateOnly && old != nil:
				return fmt.Errorf("create %s: %w (resourceVersion %s)", r.Key(), store.ErrAlreadyExists, old.Meta.ResourceVersion)
			case mode == store.UpdateOnly && old == nil:
				return fmt.Errorf("update %s: %w", r.Key(), store.ErrNotFound)
			case r.Meta.ResourceVersion != "" && old == nil:
				return fmt.Errorf("apply %s: %w: resourceVersion %s was given but the resource does not exist",
					r.Key(), store.ErrConflict, r.Meta.ResourceVersion)
			case r.Meta.ResourceVersion != "" && r.Meta.ResourceVersion != old.Meta.ResourceVersion:
				return fmt.Errorf("apply %s: %w: resourceVersion %s was given but the stored one is %s (it was changed since it was read; get it again and retry)",
					r.Key(), store.ErrConflict, r.Meta.ResourceVersion, old.Meta.ResourceVersion)
			}
		}
		// Pass 2: write.
		for i, r := range in {
			old := olds[i]
			if old != nil && sameContent(old, r) {
				out[i] = old
				continue
			}
			r.Meta.ResourceVersion = strconv.FormatInt(next, 10)
			typ := store.Added
			if old == nil {
				r.Meta.Generation = 1
				r.Meta.CreationTimestamp = s.now().UTC().Truncate(time.Second)
			} else {
				typ = store.Modified
				r.Meta.CreationTimestamp = old.Meta.CreationTimestamp
				r.Meta.Generation = old.Meta.Generation
				if !proto.Equal(old.Spec, r.Spec) {
					r.Meta.Generation++
				}
			}
			b, err := r.MarshalJSON()
			if err != nil {
				return fmt.Errorf("encode %s: %w", r.Key(), err)
			}
			if err := res.Put(resourceKey(r.Key()), b); err != nil {
				return fmt.Errorf("put %s: %w", r.Key(), err)
			}
			out[i] = r
			events = append(events, store.Event{Type: typ, Resource: r, Revision: next})
		}
		if len(events) == 0 {
			return nil
		}
		return s.commitLog(tx, next, events)
	})
	if err != nil {
		return nil, closedErr(err)
	}
	if len(events) > 0 {
		s.mu.Lock()
		for _, ev := range events {
			s.cache[ev.Resource.Key()] = ev.Resource
		}
		s.rev = next
		s.mu.Unlock()
	}
	s.publish(next, events)
	return copies(out), nil
}

// commitLog appends the events of rev to the log, trims it to the retention
// and records rev as the store revision.
func (s *Store) commitLog(tx *bbolt.Tx, rev int64, events []store.Event) error {
	le := make([]logEvent, len(events))
	for i, ev := range events {
		le[i] = logEvent{Type: ev.Type, Resource: ev.Resource}
	}
	b, err := json.Marshal(le)
	if err != nil {
		return fmt.Errorf("encode log entry %d: %w", rev, err)
	}
	lb := tx.Bucket(bucketLog)
	if err := lb.Put(revKey(rev), b); err != nil {
		return fmt.Errorf("append log entry %d: %w", rev, err)
	}
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(keyRevision, revKey(rev)); err != nil {
		return fmt.Errorf("store revision: %w", err)
	}
	cutoff := rev - s.retention
	if cutoff > getInt(meta, keyCompacted) {
		c := lb.Cursor()
		for k, _ := c.First(); k != nil && int64(binary.BigEndian.Uint64(k)) <= cutoff; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return fmt.Errorf("compact log: %w", err)
			}
		}
		if err := meta.Put(keyCompacted, revKey(cutoff)); err != nil {
			return fmt.Errorf("store compacted revision: %w", err)
		}
	}
	return nil
}

func (s *Store) publish(rev int64, events []store.Event) {
	if len(events) == 0 {
		return
	}
	evs := make([]store.Event, len(events))
	for i, ev := range events {
		evs[i] = store.Event{Type: ev.Type, Resource: ev.Resource.DeepCopy(), Revision: ev.Revision}
	}
	s.bc.Publish(rev, evs)
}

func copies(rs []*config.Resource) []*config.Resource {
	out := make([]*config.Resource, len(rs))
	for i, r := range rs {
		out[i] = r.DeepCopy()
	}
	return out
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key config.Key, resourceVersion string) (*config.Resource, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("delete %s: %w", key, err)
	}
	if key.Namespace == "" {
		key.Namespace = config.DefaultNamespace
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var (
		last *config.Resource
		next int64
	)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		res := tx.Bucket(bucketResources)
		k := resourceKey(key)
		cur := s.cache[key]
		if cur == nil {
			return fmt.Errorf("delete %s: %w", key, store.ErrNotFound)
		}
		old := cur.DeepCopy()
		if resourceVersion != "" && resourceVersion != old.Meta.ResourceVersion {
			return fmt.Errorf("delete %s: %w: resourceVersion %s was given but the stored one is %s",
				key, store.ErrConflict, resourceVersion, old.Meta.ResourceVersion)
		}
		if err := res.Delete(k); err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		next = getInt(tx.Bucket(bucketMeta), keyRevision) + 1
		old.Meta.ResourceVersion = strconv.FormatInt(next, 10)
		last = old
		return s.commitLog(tx, next, []store.Event{{Type: store.Deleted, Resource: old, Revision: next}})
	})
	if err != nil {
		return nil, closedErr(err)
	}
	s.mu.Lock()
	delete(s.cache, key)
	s.rev = next
	s.mu.Unlock()
	s.publish(next, []store.Event{{Type: store.Deleted, Resource: last, Revision: next}})
	return last.DeepCopy(), nil
}

// Watch implements store.Store. History comes from the on-disk log, so a
// watcher can resume from a revision seen before a restart, as long as it is
// within the retention; older revisions fail with store.ErrCompacted.
func (s *Store) Watch(ctx context.Context, fromRevision int64) (<-chan store.Event, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	return s.bc.Subscribe(ctx, fromRevision, s.backlog)
}

func (s *Store) backlog(from, to int64) ([]store.Event, error) {
	var out []store.Event
	err := s.db.View(func(tx *bbolt.Tx) error {
		if compacted := getInt(tx.Bucket(bucketMeta), keyCompacted); from < compacted {
			return fmt.Errorf("watch from revision %d: history starts after revision %d: %w", from, compacted, store.ErrCompacted)
		}
		c := tx.Bucket(bucketLog).Cursor()
		for k, v := c.Seek(revKey(from + 1)); k != nil; k, v = c.Next() {
			rev := int64(binary.BigEndian.Uint64(k))
			if rev > to {
				break
			}
			var les []json.RawMessage
			if err := json.Unmarshal(v, &les); err != nil {
				return fmt.Errorf("decode log entry %d: %w", rev, err)
			}
			for _, raw := range les {
				var le struct {
					Type     store.EventType `json:"type"`
					Resource json.RawMessage `json:"resource"`
				}
				if err := json.Unmarshal(raw, &le); err != nil {
					return fmt.Errorf("decode log entry %d: %w", rev, err)
				}
				r, err := decode([]byte("log entry "+strconv.FormatInt(rev, 10)), le.Resource)
				if err != nil {
					return fmt.Errorf("decode log entry %d: %w", rev, err)
				}
				out = append(out, store.Event{Type: le.Type, Resource: r, Revision: rev})
			}
		}
		return nil
	})
	return out, closedErr(err)
}

// Revision implements store.Store.
func (s *Store) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Close ends all watches and closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.bc.Close()
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if err := s.db.Close(); err != nil && !errors.Is(err, bbolt.ErrDatabaseNotOpen) {
			s.closeErr = fmt.Errorf("close bolt store: %w", err)
		}
	})
	return s.closeErr
}
