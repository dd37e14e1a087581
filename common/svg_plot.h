// SVG charts for the coordinator's dashboard and `switchyard report`: one implementation, so
// the live page and the offline report draw the same pictures. Each function returns one
// self-contained <svg> element (inline styles, no scripts, no external references) that
// browsers render as is and converters (rsvg-convert, ImageMagick) turn into PNG.
//
// Every chart carries machine-readable attributes for tests and scripts: class "sy-chart
// sy-<kind>", data-kind, and the counts it drew (data-rows / data-cols for a heatmap,
// data-series / data-points for lines, data-bars, data-spans). Text is XML-escaped.
#pragma once

#include <string>
#include <vector>

namespace switchyard::plot {

// rows x cols cells (row-major `values`, NaN: no data), colour from 0 to the largest value.
// Beyond 65,536 cells, adjacent columns are summed into bins (data-per-col says how many).
struct Heatmap {
  std::string id, title, row_label, col_label;
  int rows = 0, cols = 0;
  std::vector<double> values;
  std::vector<std::string> row_names;  // optional, one per row (e.g. "rank 3 (node-a)")
  std::string unit;                    // of the values, for the legend
};
std::string HeatmapSvg(const Heatmap& h);

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; NaN y: a gap
};
struct LineChart {
  std::string id, title, x_label, y_label;
  std::vector<Series> series;
  double y_min = 0, y_max = 1;  // the y range drawn (values outside are clipped)
  bool auto_y = false;          // y range from the data (from 0) instead
};
std::string LineChartSvg(const LineChart& c);

// One bar per entry, stacked from its parts (same order as part_names).
struct StackedBars {
  std::string id, title, y_label;
  std::vector<std::string> part_names, bar_names;
  std::vector<std::vector<double>> parts;  // [bar][part]
};
std::string StackedBarsSvg(const StackedBars& b);

// Horizontal spans on a time axis (epochs, migrations); `progress` in [0, 1] fills a span in
// flight.
struct Span {
  std::string label, state;  // state: "committed", "aborted", "refused", "in_flight", "steady"
  double start = 0, end = 0;
  double progress = -1;      // < 0: none drawn
};
struct Timeline {
  std::string id, title, x_label;
  std::vector<Span> spans;
};
std::string TimelineSvg(const Timeline& t);

// XML text escaping (& < > " ').
std::string EscapeXml(const std::string& text);

}  // namespace switchyard::plot
