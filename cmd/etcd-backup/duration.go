package main

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// longDuration is a flag for retention and ages, which run to days and
// weeks: a Go duration (720h), or one led by whole days (30d, 1d12h), as
// restic's --keep-within takes them; Go's own durations stop at hours.
// None of them can be negative.
type longDuration time.Duration

var leadingDays = regexp.MustCompile(`^([0-9]+)d(.*)$`)

const day = 24 * time.Hour

func (d *longDuration) Set(s string) error {
	bad := fmt.Errorf("%q is not a duration such as 30d, 1d12h or 720h", s)
	var days time.Duration
	rest := s
	if m := leadingDays.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > math.MaxInt64/int64(day) {
			return bad
		}
		days, rest = time.Duration(n)*day, m[2]
		if rest == "" {
			*d = longDuration(days)
			return nil
		}
		if rest[0] < '0' || rest[0] > '9' {
			// A sign or a second unit after the days: 1d-1h, 1dd.
			return bad
		}
	}
	v, err := time.ParseDuration(rest)
	switch {
	case err != nil || v > math.MaxInt64-days:
		return bad
	case v < 0:
		return fmt.Errorf("%q is negative: give a duration such as 30d, 1d12h or 720h", s)
	}
	*d = longDuration(days + v)
	return nil
}

// String is "0" for none, which help then shows no default for, as it
// does for time.Duration's "0s".
func (d *longDuration) String() string {
	if *d == 0 {
		return "0"
	}
	return time.Duration(*d).String()
}

func (d *longDuration) Type() string { return "duration" }
