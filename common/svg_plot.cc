#include "common/svg_plot.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace switchyard::plot {
namespace {

constexpr int kWidth = 960;
constexpr int kLeft = 70, kRight = 20, kTop = 48, kBottom = 42;
constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr const char* kFont = "font-family=\"sans-serif\" font-size=\"12\"";

// 0..1 -> a perceptually ordered ramp (light yellow, orange, red, dark purple).
std::string Ramp(double t) {
  static constexpr double kStops[][3] = {{255, 255, 204}, {254, 178, 76}, {240, 59, 32}, {128, 0, 38}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 3;
  const int i = std::min(2, static_cast<int>(t));
  const double f = t - i;
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<int>(std::lround(kStops[i][c] + f * (kStops[i + 1][c] - kStops[i][c])));
  return absl::StrFormat("#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

std::string Open(const std::string& kind, const std::string& id, int height, const std::string& data) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sy-chart sy-%s\" data-kind=\"%s\"%s width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" %s>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
      kind, kind, (id.empty() ? "" : absl::StrCat(" id=\"", EscapeXml(id), "\"")) + data, kWidth, height, kWidth, height, kFont);
}

std::string Title(const std::string& title) {
  return absl::StrFormat("<text x=\"%d\" y=\"20\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", kLeft,
                         EscapeXml(title));
}

// A "nice" tick step for a range.
double TickStep(double span, int ticks) {
  if (!(span > 0)) return 1;
  const double raw = span / ticks, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

// Tick positions over [lo, hi]: about `ticks` of them at "nice" values, at most 50 (a range
// too large or too narrow for doubles to step through gets its two ends).
std::vector<double> Ticks(double lo, double hi, int ticks) {
  std::vector<double> out;
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) return out;
  const double step = TickStep(hi - lo, ticks), first = std::ceil(lo / step);
  for (int i = 0; i <= 50; ++i) {
    const double x = (first + i) * step;
    if (x > hi + step * 1e-9) break;
    if (!out.empty() && !(x > out.back())) return {lo, hi};  // doubles cannot resolve the step
    out.push_back(x);
  }
  return out;
}

std::string Number(double v) {
  if (v != 0 && (std::fabs(v) >= 1e6 || std::fabs(v) < 1e-3)) return absl::StrFormat("%.2g", v);
  return absl::StrFormat("%g", std::round(v * 1000) / 1000);
}

// Axes box with y ticks over [y0, y1] and (x_ticks) x ticks over [x0, x1].
std::string Axes(int height, double x0, double x1, double y0, double y1, const std::string& x_label,
                 const std::string& y_label, bool x_ticks = true) {
  const int w = kWidth - kLeft - kRight, h = height - kTop - kBottom;
  std::string out = absl::StrFormat("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", kLeft,
                                    kTop, w, h);
  for (double y : Ticks(y0, y1, 5)) {
    const double py = kTop + h - (y - y0) / (y1 - y0) * h;
    absl::StrAppendFormat(&out, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                          kLeft, kLeft + w, py, py, kLeft - 4, py + 4, Number(y));
  }
  for (double x : x_ticks ? Ticks(x0, x1, 8) : std::vector<double>()) {
    const double px = kLeft + (x - x0) / (x1 - x0) * w;
    absl::StrAppendFormat(&out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", px, kTop + h + 15, Number(x));
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", kLeft + w / 2, height - 6,
                        EscapeXml(x_label));
  absl::StrAppendFormat(&out, "<text transform=\"translate(14,%d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", kTop + h / 2,
                        EscapeXml(y_label));
  return out;
}

std::string Legend(const std::vector<std::string>& names, int y) {
  std::string out;
  int x = kLeft;
  for (size_t i = 0; i < names.size() && i < 24; ++i) {
    absl::StrAppendFormat(&out, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n",
                          x, y - 9, kPalette[i % 10], x + 14, y, EscapeXml(names[i]));
    x += 24 + 7 * static_cast<int>(std::min<size_t>(names[i].size(), 20));
    if (x > kWidth - 120) break;
  }
  return out;
}

}  // namespace

std::string EscapeXml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') {
          out += ' ';  // not allowed in XML 1.0
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string HeatmapSvg(const Heatmap& input) {
  // Large matrices keep the SVG bounded: adjacent columns are summed into bins so that at
  // most kMaxHeatmapCells cells are drawn (a real cluster's 64 ranks x 256 experts is 16,384).
  constexpr int64_t kMaxHeatmapCells = 1 << 16;
  Heatmap binned;
  int per_bin = 1;
  if (input.rows > 0 && static_cast<int64_t>(input.rows) * input.cols > kMaxHeatmapCells) {
    per_bin = static_cast<int>((static_cast<int64_t>(input.rows) * input.cols + kMaxHeatmapCells - 1) / kMaxHeatmapCells);
    binned = input;
    binned.cols = (input.cols + per_bin - 1) / per_bin;
    binned.values.assign(static_cast<size_t>(input.rows) * binned.cols, 0.0);
    for (int r = 0; r < input.rows; ++r) {
      for (int c = 0; c < input.cols; ++c) {
        const size_t i = static_cast<size_t>(r) * input.cols + c;
        if (i < input.values.size() && std::isfinite(input.values[i])) {
          binned.values[static_cast<size_t>(r) * binned.cols + c / per_bin] += input.values[i];
        }
      }
    }
    binned.col_label = absl::StrCat(input.col_label, " bins of ", per_bin);
  }
  const Heatmap& m = per_bin > 1 ? binned : input;
  const int rows = std::max(0, m.rows), cols = std::max(0, m.cols);
  const int w = kWidth - kLeft - kRight - 110;  // room for the colour legend and its labels
  const double cell_w = cols > 0 ? static_cast<double>(w) / cols : 0;
  const double cell_h = rows > 0 ? std::clamp(360.0 / rows, 2.0, 28.0) : 0;
  const int height = kTop + static_cast<int>(std::ceil(cell_h * rows)) + kBottom;
  double max = 0;
  for (double v : m.values) {
    if (std::isfinite(v)) max = std::max(max, v);
  }
  std::string out = Open("heatmap", m.id, height,
                         absl::StrFormat(" data-rows=\"%d\" data-cols=\"%d\" data-per-col=\"%d\"", rows, cols, per_bin));
  out += Title(m.title);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      const double v = i < m.values.size() ? m.values[i] : NAN;
      absl::StrAppendFormat(&out,
                            "<rect class=\"cell\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\">"
                            "<title>%s %d, %s %d: %s%s</title></rect>\n",
                            kLeft + c * cell_w, kTop + r * cell_h, cell_w + 0.05, cell_h + 0.05,
                            std::isfinite(v) ? Ramp(max > 0 ? v / max : 0) : "#dddddd", EscapeXml(m.row_label), r,
                            EscapeXml(m.col_label), c, std::isfinite(v) ? Number(v) : "no data",
                            m.unit.empty() ? "" : " " + EscapeXml(m.unit));
    }
    if (cell_h >= 10) {
      const std::string name = r < static_cast<int>(m.row_names.size()) ? m.row_names[r] : absl::StrCat(r);
      absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", kLeft - 4,
                            kTop + r * cell_h + cell_h / 2 + 4, EscapeXml(name));
    }
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s (0..%d)</text>\n", kLeft + w / 2, height - 10,
                        EscapeXml(m.col_label), cols - 1);
  absl::StrAppendFormat(&out, "<text transform=\"translate(14,%d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
                        kTop + static_cast<int>(cell_h * rows / 2), EscapeXml(m.row_label));
  const int lx = kLeft + w + 20, lh = std::max(40, static_cast<int>(cell_h * rows));
  for (int i = 0; i < 20; ++i) {
    absl::StrAppendFormat(&out, "<rect x=\"%d\" y=\"%.1f\" width=\"14\" height=\"%.1f\" fill=\"%s\"/>\n", lx,
                          kTop + lh - (i + 1) * lh / 20.0, lh / 20.0 + 0.5, Ramp(i / 19.0));
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\">%s</text><text x=\"%d\" y=\"%d\">0</text>\n", lx + 18, kTop + 10,
                        Number(max), lx + 18, kTop + lh);
  out += "</svg>\n";
  return out;
}

std::string LineChartSvg(const LineChart& c) {
  constexpr int height = 300;
  double x0 = INFINITY, x1 = -INFINITY, y0 = c.y_min, y1 = c.y_max;
  int points = 0;
  if (c.auto_y) y0 = 0, y1 = -INFINITY;
  for (const Series& s : c.series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      if (c.auto_y && std::isfinite(s.y[i])) y1 = std::max(y1, s.y[i]);
      ++points;
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  if (!std::isfinite(y1) || y1 <= y0) y1 = y0 + 1;
  if (c.auto_y) y1 *= 1.05;
  std::string out = Open("line", c.id, height,
                         absl::StrFormat(" data-series=\"%d\" data-points=\"%d\"", static_cast<int>(c.series.size()), points));
  out += Title(c.title);
  out += Axes(height, x0, x1, y0, y1, c.x_label, c.y_label);
  const int w = kWidth - kLeft - kRight, h = height - kTop - kBottom;
  std::vector<std::string> names;
  for (const Series& s : c.series) names.push_back(s.name);
  // The first series is drawn last, on top. Long series keep each pixel column's first, lowest
  // and highest point: the shape survives, the SVG stays small.
  for (size_t k = c.series.size(); k-- > 0;) {
    const Series& s = c.series[k];
    std::string path;
    bool pen = false;
    int column = -1;
    double lo = 0, hi = 0;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        pen = false;
        continue;
      }
      const double px = kLeft + (s.x[i] - x0) / (x1 - x0) * w;
      const double py = kTop + h - (std::clamp(s.y[i], y0, y1) - y0) / (y1 - y0) * h;
      const int col = static_cast<int>(px);
      if (pen && col == column) {
        if (py >= lo && py <= hi) continue;  // inside what this column drew
        lo = std::min(lo, py), hi = std::max(hi, py);
      } else {
        column = col, lo = hi = py;
      }
      absl::StrAppendFormat(&path, "%s%.1f,%.1f", pen ? " L" : " M", px, py);
      pen = true;
    }
    absl::StrAppendFormat(&out, "<path class=\"series\" data-name=\"%s\" d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                          EscapeXml(s.name), path.empty() ? "M0,0" : path, kPalette[k % 10]);
  }
  if (c.series.size() > 1 || (!c.series.empty() && !c.series[0].name.empty())) out += Legend(names, kTop - 12);
  out += "</svg>\n";
  return out;
}

std::string StackedBarsSvg(const StackedBars& b) {
  constexpr int height = 300;
  double y1 = 0;
  for (const auto& parts : b.parts) {
    double sum = 0;
    for (double v : parts) sum += std::isfinite(v) ? std::max(0.0, v) : 0;
    y1 = std::max(y1, sum);
  }
  if (!(y1 > 0)) y1 = 1;
  y1 *= 1.05;
  const int n = static_cast<int>(b.parts.size());
  std::string out = Open("bars", b.id, height, absl::StrFormat(" data-bars=\"%d\"", n));
  out += Title(b.title);
  const int w = kWidth - kLeft - kRight, h = height - kTop - kBottom;
  out += Axes(height, 0, std::max(1, n), 0, y1, "", b.y_label, /*x_ticks=*/false);
  const double slot = n > 0 ? static_cast<double>(w) / n : w;
  for (int i = 0; i < n; ++i) {
    double base = 0;
    for (size_t p = 0; p < b.parts[i].size(); ++p) {
      const double v = std::isfinite(b.parts[i][p]) ? std::max(0.0, b.parts[i][p]) : 0;
      const double top = base + v;
      absl::StrAppendFormat(&out,
                            "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %s</title></rect>\n",
                            kLeft + i * slot + slot * 0.15, kTop + h - top / y1 * h, slot * 0.7, v / y1 * h, kPalette[p % 10],
                            EscapeXml(i < static_cast<int>(b.bar_names.size()) ? b.bar_names[i] : absl::StrCat(i)),
                            EscapeXml(p < b.part_names.size() ? b.part_names[p] : ""), Number(v));
      base = top;
    }
    if (slot >= 24) {
      absl::StrAppendFormat(&out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", kLeft + (i + 0.5) * slot,
                            kTop + h + 30, EscapeXml(i < static_cast<int>(b.bar_names.size()) ? b.bar_names[i] : absl::StrCat(i)));
    }
  }
  out += Legend(b.part_names, kTop - 12);
  out += "</svg>\n";
  return out;
}

std::string TimelineSvg(const Timeline& t) {
  const int n = static_cast<int>(t.spans.size());
  const int height = kTop + std::max(1, n) * 22 + kBottom;
  double x0 = INFINITY, x1 = -INFINITY;
  for (const Span& s : t.spans) {
    if (std::isfinite(s.start)) x0 = std::min(x0, s.start);
    if (std::isfinite(s.end)) x1 = std::max(x1, s.end);
    if (std::isfinite(s.start)) x1 = std::max(x1, s.start);
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  std::string out = Open("timeline", t.id, height, absl::StrFormat(" data-spans=\"%d\"", n));
  out += Title(t.title);
  const int w = kWidth - kLeft - kRight - 330;  // labels to the right of the spans
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * w; };
  for (int i = 0; i < n; ++i) {
    const Span& s = t.spans[i];
    const char* fill = s.state == "committed" ? "#2ca02c" : s.state == "in_flight" ? "#1f77b4" : s.state == "steady" ? "#bbbbbb" : "#d62728";
    const double a = px(std::isfinite(s.start) ? s.start : x0), b = px(std::isfinite(s.end) ? s.end : x1);
    const double y = kTop + i * 22;
    absl::StrAppendFormat(&out, "<rect class=\"span\" data-state=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"16\" fill=\"%s\" "
                                "fill-opacity=\"%s\"><title>%s</title></rect>\n",
                          EscapeXml(s.state), a, y, std::max(2.0, b - a), fill, s.progress >= 0 ? "0.35" : "0.9", EscapeXml(s.label));
    if (s.progress >= 0) {
      absl::StrAppendFormat(&out, "<rect class=\"progress\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"16\" fill=\"%s\"/>\n", a, y,
                            std::max(1.0, (b - a) * std::clamp(s.progress, 0.0, 1.0)), fill);
    }
    absl::StrAppendFormat(&out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", std::max(a, b) + 6, y + 12, EscapeXml(s.label));
  }
  for (double x : Ticks(x0, x1, 6)) {
    absl::StrAppendFormat(&out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", px(x), height - 22, Number(x));
  }
  if (n == 0) {
    absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" fill=\"#666\">none</text>\n", kLeft, kTop + 12);
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", kLeft + w / 2, height - 6,
                        EscapeXml(t.x_label));
  out += "</svg>\n";
  return out;
}

}  // namespace switchyard::plot
