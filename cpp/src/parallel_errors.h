// An exception thrown inside an OpenMP region cannot leave it (std::terminate: the interpreter aborts), so
// each piece of work runs through ParallelErrors::run, which keeps the first exception and skips the work
// left; rethrow() after the region raises it, and an allocation failure reaches Python as MemoryError.
#pragma once

#include <atomic>
#include <exception>

namespace egal {

class ParallelErrors {
 public:
  template <class Work>
  void run(Work&& work) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      work();
    } catch (...) {
#pragma omp critical(egal_parallel_errors)
      {
        if (!first_) first_ = std::current_exception();
      }
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

}  // namespace egal
