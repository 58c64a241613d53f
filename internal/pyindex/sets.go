package pyindex

import (
	"fmt"
	"time"
)

// BenchSet is the benchmark's realistic project: 15 requirements that
// resolve to 22 distributions, 12 of them sdists whose builds take
// buildDelay each, with ranges, pins, an extra, environment markers, a
// shared dependency reached along several paths and older versions the
// resolver must skip. It returns the distributions and the requirements
// file's lines.
func BenchSet(buildDelay time.Duration) ([]Dist, []string) {
	var ds []Dist
	add := func(name, version string, kind Kind, req ...string) {
		ds = append(ds, Dist{Name: name, Version: version, Kind: kind, Requires: req, BuildDelay: buildDelay})
	}
	// Seven shared dependencies, several versions each.
	for _, v := range []string{"1.0", "1.5", "2.0"} {
		add("corelib", v, Wheel)
	}
	add("textutil", "0.9", Sdist)
	add("textutil", "1.1", Sdist, "corelib>=1.5")
	add("netio", "3.1", Wheel, "corelib<2")
	add("netio", "3.2", Wheel, "corelib<2")
	add("fastjson", "4.0", Sdist)
	add("timekit", "2.2", Sdist, "corelib")
	add("colorlog", "1.0", Wheel)
	add("colorlog", "1.1", Wheel)
	add("sigs", "0.3", Sdist, `timekit>=2; python_version >= "3.6"`, `oldcompat; python_version < "3"`)
	add("oldcompat", "1.0", Wheel)
	// Fifteen direct requirements.
	add("webframe", "5.0", Wheel, "netio>=3", "textutil>=1.0", "colorlog")
	add("webframe", "5.1", Wheel, "netio>=3", "textutil>=1.0", "colorlog")
	add("ormlite", "2.0", Sdist, "corelib>=1", "timekit")
	add("templ", "1.4", Sdist, "textutil")
	ds = append(ds, Dist{Name: "apiclient", Version: "0.8", Kind: Wheel, Requires: []string{"netio", `fastjson; extra == "speed"`}, Extras: []string{"speed"}})
	add("cachebox", "3.0", Sdist, "corelib<2")
	add("authkit", "1.2", Wheel, "sigs")
	add("mailer", "2.1", Sdist, "templ>=1", "netio")
	add("queueit", "0.5", Wheel, "timekit>=2.0")
	add("imgtool", "7.0", Sdist)
	add("pdfgen", "1.1", Wheel, "imgtool>=6", "fontpack")
	add("fontpack", "0.2", Sdist)
	add("geo-tools", "2.3", Wheel, `corelib; platform_system == "Linux"`)
	add("metrics", "1.0", Sdist, "colorlog>=1.1")
	add("i18n-kit", "0.4", Wheel, "textutil")
	add("cli-helpers", "3.3", Sdist, "colorlog")
	reqs := []string{
		"webframe>=5",
		"ormlite==2.0",
		"templ~=1.4",
		"apiclient[speed]",
		"cachebox",
		"authkit>=1.0,<2",
		"mailer",
		"queueit",
		"pdfgen",
		"geo-tools",
		"metrics",
		`i18n-kit; python_version >= "3.7"`,
		"cli-helpers",
		"corelib<2",
		"sigs",
	}
	return ds, reqs
}

// Chain returns a dependency chain of n wheels: chain-0 requires chain-1,
// which requires chain-2, and so on.
func Chain(prefix string, n int) []Dist {
	var ds []Dist
	for i := 0; i < n; i++ {
		d := Dist{Name: fmt.Sprintf("%s-%d", prefix, i), Version: "1.0"}
		if i+1 < n {
			d.Requires = []string{fmt.Sprintf("%s-%d", prefix, i+1)}
		}
		ds = append(ds, d)
	}
	return ds
}
