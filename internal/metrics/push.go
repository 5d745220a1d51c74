package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/etcd-backup/etcd-backup/internal/proxy"
)

// PushURL is a Pushgateway's address with its credentials held apart, so
// that neither a log line nor an error can show them.
type PushURL struct {
	url      *url.URL // without user info
	user     string
	password string
}

var errNotPushURL = errors.New("not the address of a Pushgateway: want http(s)://[USER:PASSWORD@]HOST:PORT")

// ParsePushURL parses an http(s) URL, which may carry user:password@ for
// basic authentication. Its errors never repeat the URL, which may hold a
// password.
func ParsePushURL(s string) (PushURL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return PushURL{}, errNotPushURL
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return PushURL{}, errors.New("a Pushgateway address takes no query or fragment")
	}
	p := PushURL{url: u}
	if u.User != nil {
		p.user = u.User.Username()
		p.password, _ = u.User.Password()
		c := *u
		c.User = nil
		p.url = &c
	}
	return p, nil
}

// IsZero reports whether no URL was given.
func (p PushURL) IsZero() bool { return p.url == nil }

// String is the address without credentials, for logs.
func (p PushURL) String() string {
	if p.url == nil {
		return ""
	}
	return p.url.String()
}

func (p PushURL) pusher(client *http.Client, grouping prometheus.Labels) *push.Pusher {
	ps := push.New(p.url.String(), Job).Client(client)
	for _, name := range slices.Sorted(maps.Keys(grouping)) {
		ps = ps.Grouping(name, grouping[name])
	}
	if p.user != "" || p.password != "" {
		ps = ps.BasicAuth(p.user, p.password)
	}
	return ps
}

// push adds the run's series to its group with POST, which replaces only
// the metrics pushed: last_success, absent from a failed run, is kept. A
// success also removes the group of a failed run whose cluster was unknown.
func (p PushURL) push(ctx context.Context, client *http.Client, r *Run, o Outcome) error {
	grouping := r.labels()
	if err := p.pusher(client, grouping).Gatherer(r.registry(o, nil)).AddContext(ctx); err != nil {
		if hint, _ := proxy.Hint(err, nil, 0); hint != "" {
			// A Pushgateway reached by its route, outside NO_PROXY.
			return fmt.Errorf("push to %s: %w; %s", p, err, hint)
		}
		return fmt.Errorf("push to %s: %w", p, err)
	}
	if o.ExitCode != 0 || grouping[LabelCluster] == UnknownCluster || r.AllClusters {
		return nil
	}
	grouping[LabelCluster] = UnknownCluster
	// Delete takes no context; the client's timeout bounds it.
	if err := p.pusher(client, grouping).Delete(); err != nil {
		return fmt.Errorf("remove the failed run of unknown cluster from %s: %w", p, err)
	}
	return nil
}
