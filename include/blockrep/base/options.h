// Command-line parsing shared by the programs (boost::program_options), with one error line on
// bad flags and --help handled the same way everywhere.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <optional>

#include "blockrep/base/cli.h"

namespace blockrep {

// Parses argv into `vm`. Returns an exit status when the program should stop now (after --help,
// or after printing the error for a bad flag); nullopt to go on.
inline std::optional<int> ParseCommandLine(const char* prog,
                                           const boost::program_options::options_description& desc,
                                           int argc, char** argv,
                                           boost::program_options::variables_map* vm) {
  namespace po = boost::program_options;
  try {
    po::store(po::parse_command_line(argc, argv, desc), *vm);
    po::notify(*vm);
  } catch (const po::error& e) {
    return ReportFatal(prog, InvalidArgument(std::string(e.what()) + " (see " + prog + " --help)"));
  }
  if (vm->count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  return std::nullopt;
}

}  // namespace blockrep
