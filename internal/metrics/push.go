package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"

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
	answers := &refusals{next: client.Transport}
	if answers.next == nil {
		answers.next = http.DefaultTransport
	}
	noting := *client
	noting.Transport = answers
	if err := p.pusher(&noting, grouping).Gatherer(r.registry(o, nil)).AddContext(ctx); err != nil {
		var ue *url.Error
		if (ctx.Err() != nil || errors.As(err, &ue) && ue.Timeout()) && answers.last().code == 0 {
			return fmt.Errorf("push to %s: no answer within %s: check that it is the Pushgateway's address and that this pod may reach it (a NetworkPolicy or a firewall that drops the packets)", p, client.Timeout)
		}
		return fmt.Errorf("push to %s: %w", p, p.explain(err, answers.last()))
	}
	if o.ExitCode != 0 || grouping[LabelCluster] == UnknownCluster || r.AllClusters {
		return nil
	}
	grouping[LabelCluster] = UnknownCluster
	// Delete takes no context; the client's timeout bounds it.
	if err := p.pusher(&noting, grouping).Delete(); err != nil {
		return fmt.Errorf("remove the failed run of unknown cluster from %s: %w", p, p.explain(err, answers.last()))
	}
	return nil
}

// explain returns err, the error of a request to the Pushgateway, as the
// refusal it is when the last answer refused it, and with what to do when
// the proxy in its way, outside NO_PROXY, is what failed it.
func (p PushURL) explain(err error, last answer) error {
	var ue *url.Error
	if last.code != 0 && !errors.As(err, &ue) {
		err = &refusal{answer: last, err: err}
	}
	if hint, _ := proxy.Hint(err, p.url, proxyPage(last.code)); hint != "" {
		return fmt.Errorf("%w; %s", err, hint)
	}
	return err
}

// refusals is the Pushgateway client's transport: it keeps the last answer
// that refused a request, and hands on only the start of its page. The
// error of a refused push holds the whole page, which from a proxy is an
// HTML document of many lines.
type refusals struct {
	next    http.RoundTripper
	mu      sync.Mutex
	refused answer
}

// answer is what an answer that refused a request says: its status, and
// the gist of its page.
type answer struct {
	code int
	gist string
}

// maxPage is how much of a refusal's page is read: its title, or a
// Pushgateway's line saying which metrics it rejects, is at the start.
const maxPage = 64 << 10

func (t *refusals) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode < http.StatusBadRequest {
		return resp, err
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, maxPage))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(page))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refused = answer{code: resp.StatusCode, gist: gist(page)}
	return resp, nil
}

// last returns the last answer that refused a request; its code is 0 when
// none did.
func (t *refusals) last() answer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refused
}

// refusal is the error of a refused request, told by its answer in place
// of the client's error, which holds the answer's page whole.
type refusal struct {
	answer
	err error
}

func (r *refusal) Error() string {
	s := fmt.Sprintf("answered %d %s", r.code, http.StatusText(r.code))
	if r.gist != "" {
		s += ": " + r.gist
	}
	return s
}

func (r *refusal) Unwrap() error { return r.err }

// maxGist bounds the gist of a page in a log line.
const maxGist = 512

var htmlTitle = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// gist returns, in one line, what a page says: the title of an HTML page,
// or the first line of any other.
func gist(page []byte) string {
	text := string(page)
	if m := htmlTitle.FindStringSubmatch(text); m != nil {
		text = html.UnescapeString(m[1])
	} else {
		for line := range strings.Lines(text) {
			if text = strings.TrimSpace(line); text != "" {
				break
			}
		}
	}
	text = strings.Join(strings.Fields(text), " ")
	if r := []rune(text); len(r) > maxGist {
		text = string(r[:maxGist]) + "…"
	}
	return text
}

// proxyPage returns code when it is an answer that, to a plain-HTTP push,
// can only be a proxy's own page: a refusal, a demand for the proxy's
// credentials, or no way through to the host. A Pushgateway answers none
// of these; its own answers (400 for metrics it rejects, 401 for wrong
// credentials) pass through a proxy as they are, and get no hint.
func proxyPage(code int) int {
	switch code {
	case http.StatusForbidden, http.StatusProxyAuthRequired, http.StatusBadGateway, http.StatusGatewayTimeout:
		return code
	}
	return 0
}
