package e2e

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
)

// WritePlot writes an SVG line chart of throughput (Mpps received)
// against active connections (log scale) for every target among the
// throughput results of one frame size (the first found).
func WritePlot(w io.Writer, rs []Result) error {
	series := map[string][][2]float64{}
	size := 0
	for _, r := range rs {
		if r.Scenario != ScThroughput || r.Flows <= 0 {
			continue
		}
		if size == 0 {
			size = r.Size
		}
		if r.Size != size {
			continue
		}
		series[r.Target] = append(series[r.Target], [2]float64{float64(r.Flows), r.PPS / 1e6})
	}
	if len(series) == 0 {
		return fmt.Errorf("%w: no throughput results to plot", ErrConfig)
	}
	names := make([]string, 0, len(series))
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for n, pts := range series {
		names = append(names, n)
		sort.Slice(pts, func(i, j int) bool { return pts[i][0] < pts[j][0] })
		for _, p := range pts {
			xmin, xmax, ymax = math.Min(xmin, p[0]), math.Max(xmax, p[0]), math.Max(ymax, p[1])
		}
	}
	sort.Strings(names)
	// Log-scale x over whole decades, linear y from 0 with a rounded top.
	lo, hi := math.Floor(math.Log10(xmin)), math.Ceil(math.Log10(xmax))
	if hi == lo {
		hi = lo + 1
	}
	ytop := niceCeil(ymax)
	const W, H, L, R, T, B = 640.0, 400.0, 70.0, 20.0, 40.0, 50.0
	px := func(x float64) float64 { return L + (math.Log10(x)-lo)/(hi-lo)*(W-L-R) }
	py := func(y float64) float64 { return H - B - y/ytop*(H-T-B) }
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%g" y="20" text-anchor="middle" font-size="14">Forwarded throughput, %d-byte frames</text>`+"\n", W/2, size)
	// Axes.
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", L, T, L, H-B)
	for d := lo; d <= hi; d++ {
		x := px(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#ccc"/>`+"\n", x, T, x, H-B)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x, H-B+16, decade(d))
	}
	for i := 0; i <= 4; i++ {
		y := ytop * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ccc"/>`+"\n", L, py(y), W-R, py(y))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", L-6, py(y)+4, trimFloat(y))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">active connections</text>`+"\n", (L+W-R)/2, H-12)
	fmt.Fprintf(&b, `<text x="16" y="%g" text-anchor="middle" transform="rotate(-90 16 %g)">Mpps</text>`+"\n", (T+H-B)/2, (T+H-B)/2)
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd"}
	for i, n := range names {
		c := colors[i%len(colors)]
		var pts []string
		for _, p := range series[n] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		for _, p := range series[n] {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p[0]), py(p[1]), c)
		}
		ly := T + 16*float64(i)
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"/>`+"\n", W-R-110, ly, W-R-90, ly, c)
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", W-R-84, ly+4, html.EscapeString(n))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func decade(d float64) string {
	switch {
	case d >= 6:
		return fmt.Sprintf("%gM", math.Pow(10, d-6))
	case d >= 3:
		return fmt.Sprintf("%gk", math.Pow(10, d-3))
	}
	return fmt.Sprintf("%g", math.Pow(10, d))
}

func trimFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
