package imapd

import (
	"strconv"
	"strings"
	"time"
)

// A SEARCH date is date-day "-" date-month "-" date-year, its day 1*2DIGIT
// (RFC 9051 section 9), so SENTON 31-Feb-2020, BEFORE 32-Jan-2024 and
// SINCE 0-Mar-2020 are valid commands naming a day their month does not
// have. go-imap's parser refuses them (time.Parse), which the framer
// answered BAD, so a client whose date arithmetic gave one (a month back
// from the 31st of March) got no answer at all. Such a date lies between
// the last day of its month and the first of the next (day 0 between the
// first and the day before it), and is searched so:
//
//   - BEFORE, SENTBEFORE: the dates before the first of the next month (of
//     the month itself for day 0);
//   - SINCE, SENTSINCE: the dates from that first day on;
//   - ON, SENTON: no date, so no message.
//
// so that for any such date, BEFORE and SINCE together find every message,
// and ON none. Dovecot 2.3.19 answers OK too, but took each such date for
// one after every other: BEFORE 31-Feb-2020 found mail of 2026, and SINCE
// none.

// impossibleDates returns line, the first line of a SEARCH or UID SEARCH
// named name, with each date key whose date names a day its month does
// not have written as valid keys that search it as above: BEFORE
// 31-Feb-2020 as BEFORE 1-Mar-2020, SENTON 31-Feb-2020 as (SENTSINCE
// 1-Mar-2020 SENTBEFORE 1-Mar-2020). It walks the arguments as keys, as
// searchProblem does, so a date in another key's argument (HEADER ON
// 31-Feb-2020) stays as it is, and stops at a literal: keys after one
// keep the BAD, as does a line the keys would make longer than maxLine.
func impossibleDates(line []byte, name string) []byte {
	start := argsStart(line, name)
	if start < 0 {
		return line
	}
	toks := spanTokens(string(line[start:]), false)
	type edit struct {
		from, to int
		with     string
	}
	var edits []edit
	i := 0
	if i < len(toks) && strings.EqualFold(toks[i].text, "RETURN") {
		for i++; i < len(toks) && searchReturnOpts[strings.ToUpper(toks[i].text)]; i++ {
		}
	}
	if i < len(toks) && strings.EqualFold(toks[i].text, "CHARSET") {
		i += 2
	}
	for i < len(toks) && !toks[i].literal {
		key := strings.ToUpper(toks[i].text)
		n, ok := searchKeyArgs[key]
		if !ok || toks[i].quoted {
			i++
			continue
		}
		if dateKeys[key] && i+1 < len(toks) && !toks[i+1].literal && !toks[i+1].quoted {
			if with, ok := dateKeyBetween(key, toks[i+1].text); ok {
				edits = append(edits, edit{start + toks[i].from, start + toks[i+1].to, with})
			}
		}
		i += 1 + n
	}
	if len(edits) == 0 {
		return line
	}
	grown := 0
	for _, e := range edits {
		grown += len(e.with) - (e.to - e.from)
	}
	if len(line)+grown > maxLine {
		// Over what the framer hands the library in one line: kept, BAD.
		return line
	}
	out := make([]byte, 0, len(line)+32*len(edits))
	last := 0
	for _, e := range edits {
		out = append(out, line[last:e.from]...)
		out = append(out, e.with...)
		last = e.to
	}
	return append(out, line[last:]...)
}

// dateKeyBetween returns the keys that search key (a date key, upper
// case) with date as above, when date is a date whose day its month
// does not have; false for any other date, or when the first day it
// stands for is past the year 9999.
func dateKeyBetween(key, date string) (string, bool) {
	if !dateRE.MatchString(date) {
		return "", false
	}
	dayText, rest, _ := strings.Cut(date, "-")
	day, _ := strconv.Atoi(dayText)
	month, err := time.Parse("Jan-2006", rest) // the month's name in any case, as go-imap reads it
	if err != nil {
		return "", false
	}
	last := month.AddDate(0, 1, -1).Day()
	var first time.Time
	switch {
	case day == 0:
		first = month
	case day > last:
		first = month.AddDate(0, 1, 0)
	default:
		return "", false
	}
	if first.Year() > 9999 {
		return "", false
	}
	d := first.Format("2-Jan-2006")
	switch key {
	case "ON":
		return "(SINCE " + d + " BEFORE " + d + ")", true
	case "SENTON":
		return "(SENTSINCE " + d + " SENTBEFORE " + d + ")", true
	}
	return key + " " + d, true
}
