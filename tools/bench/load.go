package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// stats summarises one run of an operation by concurrent clients.
type stats struct {
	ops      int // successful operations
	errs     int
	firstErr string
	elapsed  time.Duration   // first start to last finish
	lat      []time.Duration // of successful operations, sorted
}

// rate is successful operations per second.
func (s stats) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// pct is the p-th latency quantile (nearest rank), 0 < p <= 1.
func (s stats) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(s.lat)))) - 1
	return s.lat[max(i, 0)]
}

// merge adds the results of another run of the same operation.
func (s stats) merge(o stats) stats {
	s.ops, s.errs, s.elapsed = s.ops+o.ops, s.errs+o.errs, s.elapsed+o.elapsed
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.lat = append(slices.Clip(s.lat), o.lat...)
	slices.Sort(s.lat)
	return s
}

// recorder collects results from concurrent workers.
type recorder struct {
	mu    sync.Mutex
	st    stats
	ids   []string
	start time.Time
}

// add records one operation. A non-empty id is kept even with an error, so
// whatever was created is still revoked.
func (r *recorder) add(id string, lat time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != "" {
		r.ids = append(r.ids, id)
	}
	if err != nil {
		r.st.errs++
		if r.st.firstErr == "" {
			r.st.firstErr = err.Error()
		}
		return
	}
	r.st.ops++
	r.st.lat = append(r.st.lat, lat)
}

func (r *recorder) finish() (stats, []string) {
	r.st.elapsed = time.Since(r.start)
	slices.Sort(r.st.lat)
	return r.st, r.ids
}

// issueFor runs issue from `clients` goroutines, each back to back, until dur
// has passed; requests in flight then finish and count. It returns the
// stats and the ids (lease IDs) of what was issued.
func issueFor(ctx context.Context, clients int, dur time.Duration, issue func(context.Context) (string, error)) (stats, []string) {
	r := &recorder{start: time.Now()}
	deadline := r.start.Add(dur)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				id, err := issue(ctx)
				r.add(id, time.Since(t), err)
			}
		})
	}
	wg.Wait()
	return r.finish()
}

// issueN issues n credentials with `clients` goroutines.
func issueN(ctx context.Context, clients, n int, issue func(context.Context) (string, error)) (stats, []string) {
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	r := &recorder{start: time.Now()}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range work {
				t := time.Now()
				id, err := issue(ctx)
				r.add(id, time.Since(t), err)
			}
		})
	}
	wg.Wait()
	return r.finish()
}

// forEach runs op on every id with `clients` goroutines.
func forEach(ctx context.Context, clients int, ids []string, op func(context.Context, string) error) stats {
	work := make(chan string, len(ids))
	for _, id := range ids {
		work <- id
	}
	close(work)
	r := &recorder{start: time.Now()}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for id := range work {
				t := time.Now()
				err := op(ctx, id)
				r.add("", time.Since(t), err)
			}
		})
	}
	wg.Wait()
	st, _ := r.finish()
	return st
}
