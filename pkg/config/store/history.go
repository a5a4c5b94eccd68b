package store

import (
	"fmt"
	"sort"
)

// History keeps the events of the last Limit revisions in memory, for
// stores whose revisions are not durable (the file and Kubernetes stores)
// to replay to watchers. It is not safe for concurrent use: the store
// guards it with its own lock.
type History struct {
	// Limit is how many revisions are kept (older ones are compacted).
	Limit     int
	events    []Event // events of revisions > compacted, in order
	compacted int64
}

// Add records the events of revision rev (the store's new revision) and
// drops revisions older than rev-Limit.
func (h *History) Add(rev int64, evs ...Event) {
	h.events = append(h.events, evs...)
	cutoff := rev - int64(h.Limit)
	if cutoff <= h.compacted {
		return
	}
	i := sort.Search(len(h.events), func(i int) bool { return h.events[i].Revision > cutoff })
	h.events = append([]Event(nil), h.events[i:]...)
	h.compacted = cutoff
}

// Backlog returns copies of the events with revision in (from, to], or
// ErrCompacted when from is older than what is kept. It has the shape of
// a Broadcaster Backlog once the caller has taken its lock.
func (h *History) Backlog(from, to int64) ([]Event, error) {
	if from < h.compacted {
		return nil, fmt.Errorf("watch from revision %d: history starts after revision %d: %w", from, h.compacted, ErrCompacted)
	}
	var out []Event
	for _, ev := range h.events {
		if ev.Revision > from && ev.Revision <= to {
			out = append(out, Event{Type: ev.Type, Resource: ev.Resource.DeepCopy(), Revision: ev.Revision})
		}
	}
	return out, nil
}
