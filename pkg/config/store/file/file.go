// Package file is a read-only config store over a directory of Istio YAML or
// JSON files (searched recursively for *.yaml, *.yml and *.json). It watches
// the directory with fsnotify, reloads after a short debounce and emits
// watch events for what changed, so `weft control-plane --store file` follows
// edits to a GitOps checkout or a mounted ConfigMap.
//
// A file that stops parsing or validating keeps its last good resources; the
// problem is logged and reported by Errors (with file:line) until the file is
// fixed. A resource (kind, namespace, name) defined in two files is kept from
// the first file in path order and reported as an error at the second. Names
// starting with "." (editor swap files, ConfigMap "..data" directories) are
// ignored; symlinked files are followed.
//
// Revisions live in memory: the initial load is revision 1 (when the
// directory holds resources) and each reload that changes something adds
// one; they start again after a restart.
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// ParseFunc turns one file's bytes into resources. Entries of the returned
// list that are not warnings make the whole file invalid.
type ParseFunc func(file string, data []byte) ([]*config.Resource, config.ErrorList)

// Options configures Open. The zero value is usable.
type Options struct {
	// Logger receives reload results and file errors. Nil discards logs.
	Logger *slog.Logger
	// Debounce is how long the directory must be quiet after a change
	// before it is reloaded; while changes keep coming, a reload still
	// happens every 10 Debounce periods. Default 100ms.
	Debounce time.Duration
	// History is how many revisions of events Watch can replay. Default 1000.
	History int
	// Parse decodes and validates a file. Default: validation.ParseFile
	// (decode with field lines, then Istio's validation rules).
	Parse ParseFunc
	// Now returns the current time, for CreationTimestamp. Default time.Now.
	Now func() time.Time
}

// emptyGrace is how long a file that was just emptied keeps its previous
// resources, in case a writer is between truncating and writing it.
const emptyGrace = time.Second

// fileState is what the store knows about one file.
type fileState struct {
	data []byte             // content at the last reload
	good []*config.Resource // resources of the last content that parsed
	errs config.ErrorList   // problems with the current content
}

// Store is a read-only store.Store over a directory.
//
// Concurrency: every method is safe for concurrent use. Reloads run on one
// internal goroutine (started by Open, stopped by Close) and are serialised;
// readers see either the state before or after a reload, never a mix.
type Store struct {
	dir     string
	log     *slog.Logger
	opts    Options
	bc      *store.Broadcaster
	watcher *fsnotify.Watcher
	cancel  context.CancelFunc
	done    chan struct{}

	reloadMu sync.Mutex // serialises reloads, and so Publish calls
	files    map[string]*fileState
	watched  map[string]bool // directories added to the watcher
	logged   map[string]bool // error messages already logged

	mu        sync.RWMutex // guards the fields below
	rev       int64
	resources map[config.Key]*config.Resource
	errs      config.ErrorList
	history   store.History

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open loads dir and starts watching it. Problems in files do not fail Open;
// they are logged and reported by Errors. Open fails when dir cannot be read
// or watched.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.History <= 0 {
		opts.History = 1000
	}
	if opts.Parse == nil {
		opts.Parse = validation.ParseFile
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open file store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open file store: %s is not a directory", dir)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("open file store %s: watch: %w", dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		dir:       dir,
		log:       opts.Logger.With("store", "file", "dir", dir),
		opts:      opts,
		bc:        store.NewBroadcaster(0),
		history:   store.History{Limit: opts.History},
		watcher:   w,
		cancel:    cancel,
		done:      make(chan struct{}),
		files:     map[string]*fileState{},
		watched:   map[string]bool{},
		logged:    map[string]bool{},
		resources: map[config.Key]*config.Resource{},
	}
	if _, err := s.reload(); err != nil {
		cancel()
		w.Close()
		return nil, err
	}
	go s.run(ctx)
	return s, nil
}

// run reloads after the directory has been quiet for the debounce period,
// or at the latest 10 debounce periods after the first unhandled change, so
// a constantly written file cannot starve reloads.
func (s *Store) run(ctx context.Context) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var pendingSince time.Time // zero when no reload is pending
	schedule := func() {
		now := time.Now()
		if pendingSince.IsZero() {
			pendingSince = now
		}
		d := s.opts.Debounce
		if left := pendingSince.Add(10 * s.opts.Debounce).Sub(now); left < d {
			d = max(left, 0)
		}
		timer.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-s.watcher.Events:
			if !ok {
				return
			}
			if s.relevant(ev) {
				schedule()
			}
		case err, ok := <-s.watcher.Errors:
			if !ok {
				return
			}
			// Typically an event queue overflow: rescan to catch up.
			s.log.Warn("watch error; rescanning", "err", err)
			schedule()
		case <-timer.C:
			pendingSince = time.Time{}
			retry, err := s.reload()
			if err != nil {
				s.log.Error("reload failed", "err", err)
			}
			if retry {
				schedule()
			}
		}
	}
}

// relevant reports whether ev may change the store's view, and starts
// watching new directories at once, so files written into them before the
// reload are not missed (the reload walks them).
func (s *Store) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	if strings.HasPrefix(base, "..") {
		return true // a ConfigMap volume swapping its ..data link
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		return true // maybe a directory; it cannot be examined any more
	}
	if configFile(base) && !ignored(base) {
		return true
	}
	if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() && !ignored(base) {
		if ev.Has(fsnotify.Create) {
			s.addWatch(ev.Name)
		}
		return true
	}
	return false
}

func (s *Store) addWatch(dir string) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.addWatchLocked(dir)
}

func (s *Store) addWatchLocked(dir string) {
	if s.watched[dir] {
		return
	}
	if err := s.watcher.Add(dir); err != nil {
		s.log.Warn("cannot watch directory", "path", dir, "err", err)
		return
	}
	s.watched[dir] = true
}

func ignored(name string) bool { return strings.HasPrefix(name, ".") }

func configFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// scan returns the config files and directories under s.dir, sorted.
func (s *Store) scan() (files, dirs []string, err error) {
	err = filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == s.dir {
				return err
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			s.log.Warn("cannot read", "path", path, "err", err)
			return nil
		}
		if path != s.dir && ignored(d.Name()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, path)
			return nil
		}
		if configFile(d.Name()) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("scan %s: %w", s.dir, err)
	}
	sort.Strings(files)
	return files, dirs, nil
}

// reload rescans the directory, re-parses changed files, recomputes the view
// and publishes the difference as one new revision. It reports retry when a
// file looked like it was being rewritten (just truncated to empty) and was
// left at its previous state; the caller reloads again after a debounce.
func (s *Store) reload() (retry bool, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	files, dirs, err := s.scan()
	if err != nil {
		return false, err
	}
	present := map[string]bool{}
	for _, d := range dirs {
		present[d] = true
		s.addWatchLocked(d)
	}
	for d := range s.watched {
		if !present[d] {
			_ = s.watcher.Remove(d) // usually already gone with the directory
			delete(s.watched, d)
		}
	}

	// Re-parse the files whose content changed.
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("cannot read", "path", f, "err", err)
			}
			continue
		}
		seen[f] = true
		st := s.files[f]
		if st == nil {
			st = &fileState{}
			s.files[f] = st
		} else if bytes.Equal(st.data, data) {
			continue
		} else if len(bytes.TrimSpace(data)) == 0 && len(st.data) > 0 {
			// A writer truncates before it writes: if the file was emptied
			// recently, wait for its content before dropping its resources.
			// (Emptying a file on purpose takes effect after emptyGrace.)
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) < max(s.opts.Debounce, emptyGrace) {
				s.log.Debug("file was just emptied; waiting for its content", "path", f, "modified", fi.ModTime())
				retry = true
				continue
			}
			s.log.Debug("file emptied", "path", f)
		}
		st.data = data
		rs, errs := s.opts.Parse(f, data)
		if len(errs.Errors()) > 0 {
			st.errs = errs // keep st.good: the last good state of this file
			continue
		}
		st.good, st.errs = rs, errs
	}
	for f := range s.files {
		if !seen[f] {
			s.log.Debug("file removed", "path", f)
			delete(s.files, f)
		}
	}

	// Merge the files in path order; a resource defined twice is an error
	// for the later definition.
	next := map[config.Key]*config.Resource{}
	from := map[config.Key]config.Source{}
	var errs config.ErrorList
	for _, f := range files {
		st := s.files[f]
		if st == nil {
			continue
		}
		errs = append(errs, st.errs...)
		for _, r := range st.good {
			k := r.Key()
			if k.Namespace == "" {
				k.Namespace = config.DefaultNamespace
			}
			if first, dup := from[k]; dup {
				errs = append(errs, &config.FieldError{Source: r.Source, Kind: r.Kind, Name: k.Namespace + "/" + k.Name,
					Msg: fmt.Sprintf("duplicate resource: already defined at %s; this definition is ignored", first)})
				continue
			}
			from[k] = r.Source
			next[k] = r
		}
	}
	s.logNewErrors(errs)

	s.mu.Lock()
	rev := s.rev + 1
	now := s.opts.Now().UTC().Truncate(time.Second)
	var events []store.Event
	stored := make(map[config.Key]*config.Resource, len(next))
	keys := make([]config.Key, 0, len(next)+len(s.resources))
	for k := range next {
		keys = append(keys, k)
	}
	for k := range s.resources {
		if next[k] == nil {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keyLess(keys[i], keys[j]) })
	for _, k := range keys {
		old, r := s.resources[k], next[k]
		switch {
		case r == nil:
			d := old.DeepCopy()
			d.Meta.ResourceVersion = strconv.FormatInt(rev, 10)
			events = append(events, store.Event{Type: store.Deleted, Resource: d, Revision: rev})
		case old != nil && sameContent(old, r):
			stored[k] = old
		default:
			c := r.DeepCopy()
			c.Source = config.Source{}
			c.Meta.Namespace = k.Namespace
			c.Meta.ResourceVersion = strconv.FormatInt(rev, 10)
			typ := store.Added
			if old == nil {
				c.Meta.Generation = 1
				c.Meta.CreationTimestamp = now
			} else {
				typ = store.Modified
				c.Meta.Generation = old.Meta.Generation
				c.Meta.CreationTimestamp = old.Meta.CreationTimestamp
				if !proto.Equal(old.Spec, c.Spec) {
					c.Meta.Generation++
				}
			}
			stored[k] = c
			events = append(events, store.Event{Type: typ, Resource: c, Revision: rev})
		}
	}
	s.errs = errs
	if len(events) > 0 {
		s.rev = rev
		s.resources = stored
		s.history.Add(rev, events...)
	}
	s.mu.Unlock()

	if len(events) > 0 {
		s.log.Info("reloaded", "revision", rev, "changes", len(events), "resources", len(stored), "errors", len(errs.Errors()))
		pub := make([]store.Event, len(events))
		for i, ev := range events {
			pub[i] = store.Event{Type: ev.Type, Resource: ev.Resource.DeepCopy(), Revision: ev.Revision}
		}
		s.bc.Publish(rev, pub)
	}
	return retry, nil
}

func (s *Store) logNewErrors(errs config.ErrorList) {
	now := map[string]bool{}
	for _, e := range errs {
		msg := e.Error()
		now[msg] = true
		if s.logged[msg] {
			continue
		}
		if e.Warning {
			s.log.Warn("config warning", "problem", msg)
		} else {
			s.log.Error("invalid config; keeping the file's last good state", "problem", msg)
		}
	}
	s.logged = now
}

func keyLess(a, b config.Key) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Kind < b.Kind
}

func sameContent(old, r *config.Resource) bool {
	return old.APIVersion == r.APIVersion &&
		maps.Equal(old.Meta.Labels, r.Meta.Labels) &&
		maps.Equal(old.Meta.Annotations, r.Meta.Annotations) &&
		proto.Equal(old.Spec, r.Spec)
}

// Errors returns the current problems with the directory's files (parse and
// validation errors, warnings, duplicates), in file order, each naming its
// file and line.
func (s *Store) Errors() config.ErrorList {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append(config.ErrorList(nil), s.errs...)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key config.Key) (*config.Resource, error) {
	if key.Namespace == "" {
		key.Namespace = config.DefaultNamespace
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.resources[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return r.DeepCopy(), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, kind, namespace string) ([]*config.Resource, int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*config.Resource
	for k, r := range s.resources {
		if (kind == "" || k.Kind == kind) && (namespace == "" || k.Namespace == namespace) {
			out = append(out, r.DeepCopy())
		}
	}
	sort.Slice(out, func(i, j int) bool { return keyLess(out[i].Key(), out[j].Key()) })
	return out, s.rev, nil
}

// Apply always fails with store.ErrReadOnly: edit the files instead.
func (s *Store) Apply(ctx context.Context, mode store.ApplyMode, rs []*config.Resource) ([]*config.Resource, error) {
	return nil, fmt.Errorf("apply to %s: %w (edit the files instead)", s.dir, store.ErrReadOnly)
}

// Delete always fails with store.ErrReadOnly.
func (s *Store) Delete(ctx context.Context, key config.Key, resourceVersion string) (*config.Resource, error) {
	return nil, fmt.Errorf("delete %s from %s: %w (edit the files instead)", key, s.dir, store.ErrReadOnly)
}

// Watch implements store.Store. Revisions live in memory: the last
// Options.History revisions can be replayed; after a restart revisions
// start again at 1.
func (s *Store) Watch(ctx context.Context, fromRevision int64) (<-chan store.Event, error) {
	return s.bc.Subscribe(ctx, fromRevision, s.backlog)
}

func (s *Store) backlog(from, to int64) ([]store.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.history.Backlog(from, to)
}

// Revision implements store.Store.
func (s *Store) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Close stops watching the directory and ends all watches. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.bc.Close()
		if err := s.watcher.Close(); err != nil {
			s.closeErr = fmt.Errorf("close file store watcher: %w", err)
		}
	})
	return s.closeErr
}
