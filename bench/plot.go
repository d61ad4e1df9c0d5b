package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// SVG writes a latency-by-percentile plot of every target and the total, in
// the manner of HdrHistogram's plots: the x axis is spread by "nines" (50%,
// 90%, 99%, 99.9%, ...) so the tail gets as much room as the median, and the
// y axis is logarithmic in microseconds.
func (rep *Report) SVG(w io.Writer, title string) error {
	const (
		width, height          = 900, 520
		left, right, top, foot = 80, 170, 50, 60
		maxNines               = 5.0 // up to p99.999
	)
	pw, ph := float64(width-left-right), float64(height-top-foot)
	series := append(append([]*Result{}, rep.Targets...), rep.Total)

	// y range over every series, in log10(µs).
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range series {
		if r.Latency.Count() == 0 {
			continue
		}
		lo = math.Min(lo, us(r.Latency.Min()))
		hi = math.Max(hi, us(r.Latency.Max()))
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	ylo := math.Floor(math.Log10(math.Max(lo, 0.01)))
	yhi := math.Ceil(math.Log10(math.Max(hi, 0.01)))
	if yhi <= ylo {
		yhi = ylo + 1
	}
	x := func(nines float64) float64 { return float64(left) + nines/maxNines*pw }
	y := func(v float64) float64 {
		return float64(top) + ph - (math.Log10(math.Max(v, 0.01))-ylo)/(yhi-ylo)*ph
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="16">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and axis labels.
	for n := 0.0; n <= maxNines; n++ {
		label := "0%"
		if n > 0 {
			label = strings.TrimSuffix(fmt.Sprintf("%.*f", int(n)-1, 100-100/math.Pow(10, n)), ".") + "%"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(n), top, x(n), height-foot)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(n), height-foot+18, label)
	}
	for e := ylo; e <= yhi; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), width-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">percentile</text>`+"\n", float64(left)+pw/2, height-12)
	fmt.Fprintf(&b, `<text transform="translate(20,%.1f) rotate(-90)" text-anchor="middle">latency (µs)</text>`+"\n", float64(top)+ph/2)

	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}
	for i, r := range series {
		if r.Latency.Count() == 0 {
			continue
		}
		color, dash := colors[i%len(colors)], ""
		if r == rep.Total {
			color, dash = "#000", ` stroke-dasharray="6,3"`
		}
		var pts []string
		for k := 0; k <= 200; k++ {
			n := maxNines * float64(k) / 200
			p := 100 - 100/math.Pow(10, n)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(n), y(pct(&r.Latency, p))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		ly := top + 16*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", width-right+10, ly, width-right+30, ly, color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", width-right+35, ly+4, html.EscapeString(r.Name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
